"""What a model takes and gives: tensor specs, and validation of inputs.

Datatypes are named as in the Open Inference Protocol (``FP64``, ``INT64``, ``BYTES``...; see ``datatypes.py``),
so a signature reads the same in every language. The first axis of every tensor is the row (batch) axis; ``-1``
in a shape means "any size".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from .datatypes import DATATYPES, datatype_of, json_type
from .errors import InvalidInput, PayloadTooLarge
from .matching import expected_inputs, match

T = TypeVar("T")
_MAX_MEMO = 256

_KIND_WORDS = {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "U": "string", "S": "string"}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output.

    ``shape`` includes the row axis first (normally ``-1``). ``labels`` names the positions along the last
    axis (class labels for probabilities). ``allow_nonfinite`` lets NaN/Infinity through validation, for
    models that handle missing values themselves. ``categories``: the values a categorical input knows (an
    encoder's learnt categories), for documentation and forms (the playground's select); validation does not
    read them (a model that refuses other values checks them itself).
    """

    name: str
    datatype: str = "FP64"
    shape: tuple[int, ...] = (-1,)
    labels: tuple[Any, ...] | None = None
    allow_nonfinite: bool = False
    example: Any = None
    description: str | None = None
    categories: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: unknown datatype {self.datatype!r}; one of {sorted(DATATYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if not self.shape:
            raise ValueError(f"tensor {self.name!r}: shape needs at least the row axis, e.g. (-1,)")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))

    @property
    def dtype(self) -> np.dtype[Any]:
        return DATATYPES[self.datatype]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row: the shape without the row axis."""
        return self.shape[1:]

    def example_value(self) -> Any:
        """An example value for one row, for documentation."""
        if self.example is not None:
            return self.example
        scalar: Any = {"boolean": False, "string": "text", "integer": 0, "number": 0.0}[json_type(self.datatype)]
        value = scalar
        for dim in reversed(self.row_shape):
            value = [value] * (dim if dim > 0 else 1)
        return value

    def describe(self) -> str:
        return f"{self.datatype} {_shape_text(self.shape)}"

    def to_dict(self) -> dict[str, Any]:
        """Open Inference Protocol tensor metadata, plus labels and categories where present."""
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.labels is not None:
            out["labels"] = [_plain(v) for v in self.labels]
        if self.categories is not None:
            out["categories"] = [_plain(v) for v in self.categories]
        return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _fast: tuple[tuple[TensorSpec, _FastCheck], ...] = field(init=False, repr=False, compare=False)
    _memo: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names in signature: {names}")
        if not self.inputs:
            raise ValueError("a signature needs at least one input")
        object.__setattr__(self, "_by_name", {s.name: s for s in self.inputs})
        object.__setattr__(self, "_fast", tuple((s, _FastCheck.of(s)) for s in self.inputs))
        object.__setattr__(self, "_memo", {})

    @classmethod
    def from_features(cls, features: Mapping[str, str | type], outputs: Sequence[TensorSpec] = ()) -> Signature:
        """A tabular signature: one 1-D input per named feature, e.g. ``{"age": "FP64", "city": "BYTES"}``."""
        inputs = [
            TensorSpec(name, ft if isinstance(ft, str) else datatype_of(ft), (-1,)) for name, ft in features.items()
        ]
        return cls(tuple(inputs), tuple(outputs))

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def input(self, name: str) -> TensorSpec:
        return self._by_name[name]

    def output(self, name: str) -> TensorSpec | None:
        return next((s for s in self.outputs if s.name == name), None)

    def memo(self, key: Any, build: Callable[..., T], *args: Any) -> T:
        """``build(*args)``, worked out once per signature and ``key``: what a codec derives from the signature
        alone (an answer's keys, its label strings), kept with it instead of redone on every request. (Arguments,
        not a closure: a function that makes a closure pays for its cells on every call, found or not.)"""
        try:
            return cast(T, self._memo[key])
        except KeyError:
            value = build(*args)
            if len(self._memo) < _MAX_MEMO:  # keys a caller makes up per request cannot grow it without bound
                self._memo[key] = value
            return value

    def example_record(self) -> dict[str, Any]:
        return {s.name: s.example_value() for s in self.inputs}

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def validate(self, inputs: Mapping[str, np.ndarray], *, max_rows: int | None = None) -> dict[str, np.ndarray]:
        """Check inputs against the signature and cast them to the declared dtypes.

        Inputs whose names are not exactly the signature's are matched by ``matching.py`` first (one tensor under
        any name, one ``[N, n_features]`` tensor for named features), the way other servers' clients send them.

        Raises ``InvalidInput`` naming the input and what was expected, or ``PayloadTooLarge`` for too many
        rows. Returns the arrays the model will see.
        """
        if inputs.keys() != self._by_name.keys():  # one set comparison in C, for the common case
            inputs = self._matched(inputs)
        out: dict[str, np.ndarray] = {}
        rows: int | None = None
        floats: list[np.ndarray] = []  # arrays whose finiteness is checked at once, below
        for spec, fast in self._fast:
            arr = inputs[spec.name]
            # already the declared dtype and shape: the common case, checked here, without a call per input
            if (
                type(arr) is np.ndarray
                and ((dtype := arr.dtype) is fast.dtype or dtype == fast.dtype)
                and arr.shape[1:] == fast.row
                and arr.ndim == fast.ndim
            ) or fast.fits(arr):
                if fast.finite:
                    floats.append(arr)
            else:
                arr = _cast(spec, _check_shape(spec, np.asarray(arr)))
            n = arr.shape[0]
            if rows is None:
                rows = n
            elif n != rows:
                raise InvalidInput(
                    f"input '{spec.name}': has {n} rows but '{self.inputs[0].name}' has {rows}; "
                    "every input needs the same number of rows",
                    field=spec.name,
                )
            out[spec.name] = arr
        if floats and not _all_finite(floats):
            self._name_nonfinite(out, floats)
        if not rows:
            raise InvalidInput("the request has no rows; send at least one")
        if max_rows is not None and rows > max_rows:
            raise PayloadTooLarge(f"the request has {rows} rows; the limit is {max_rows} rows per request")
        return out

    def _matched(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Inputs under other names than the signature's, matched by ``matching.py`` (a request written for another
        server); ``InvalidInput`` naming the missing and unknown ones when they do not match."""
        missing = [s for s in self.inputs if s.name not in inputs]
        unknown = [n for n in inputs if n not in self._by_name]
        matched = match(self, inputs)
        if matched is None:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(f"'{s.name}' ({s.describe()})" for s in missing))
            if unknown:
                parts.append("unknown " + ", ".join(f"'{n}'" for n in unknown))
            first = missing[0].name if missing else unknown[0]
            raise InvalidInput(f"inputs: {'; '.join(parts)}; {expected_inputs(self)}", field=first)
        return matched

    def _name_nonfinite(self, out: dict[str, np.ndarray], floats: list[np.ndarray]) -> None:
        """Raise ``InvalidInput`` naming the input of ``out`` among ``floats`` that holds a non-finite value."""
        for spec in self.inputs:
            if any(out[spec.name] is a for a in floats):
                _cast(spec, out[spec.name])


@dataclass(frozen=True)
class _FastCheck:
    """What ``validate`` checks cheaply for an input that already has the declared dtype, worked out once."""

    dtype: np.dtype[Any]
    ndim: int
    fixed: tuple[tuple[int, int], ...]  # (axis, size) of every fixed dimension
    finite: bool  # a float input that must hold finite numbers
    plain: bool  # no per-element check needed beyond finiteness (BYTES needs one)
    #: the shape after the row axis, for ``validate``'s inline check: when the row axis is open, every other one
    #: fixed and the input plain; else ``None``, which no shape equals (``fits`` decides)
    row: tuple[int, ...] | None

    @classmethod
    def of(cls, spec: TensorSpec) -> _FastCheck:
        fixed = tuple((axis, size) for axis, size in enumerate(spec.shape) if size >= 0)
        finite = spec.dtype.kind == "f" and not spec.allow_nonfinite
        plain = spec.datatype != "BYTES"
        row = spec.shape[1:] if plain and spec.shape[0] < 0 and all(d >= 0 for d in spec.shape[1:]) else None
        return cls(spec.dtype, len(spec.shape), fixed, finite, plain, row)

    def fits(self, arr: Any) -> bool:
        if type(arr) is not np.ndarray or not self.plain or arr.dtype != self.dtype or arr.ndim != self.ndim:
            return False
        shape = arr.shape
        return all(shape[axis] == size for axis, size in self.fixed)


def _all_finite(arrays: list[np.ndarray]) -> bool:
    """One check for many small float arrays (one numpy call per array costs more than the check)."""
    if len(arrays) == 1:  # the common case, without the generators below
        arr = arrays[0]
        if arr.size > 64:
            return bool(np.isfinite(arr).all())
        # a row or a few: the sum of their list's values, added up in C, is finite when every value is (a NaN or
        # an infinity makes it NaN or infinite); only an overflow of finite values needs the look at each one
        total = sum(map(sum, arr.tolist())) if arr.ndim == 2 else sum(arr.ravel().tolist())
        if math.isfinite(total):
            return True
        return all(map(math.isfinite, arr.ravel().tolist()))
    if sum(a.size for a in arrays) <= 64:
        isfinite = math.isfinite  # map over a builtin: no generator frame per value
        return all(all(map(isfinite, a.ravel().tolist())) for a in arrays)
    if len(arrays) == 1:
        return bool(np.isfinite(arrays[0]).all())
    return bool(np.isfinite(np.concatenate([a.ravel() for a in arrays])).all())


def _check_shape(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    expected = spec.shape
    if arr.ndim == len(expected) + 1 and arr.ndim >= 2 and arr.shape[-1] == 1:
        arr = arr.reshape(arr.shape[:-1])  # a column sent as [N, 1]
    ok = arr.ndim == len(expected) and all(e < 0 or e == a for e, a in zip(expected, arr.shape, strict=True))
    if not ok:
        raise InvalidInput(
            f"input '{spec.name}': expected shape {_shape_text(expected)} (-1: any size), got {_shape_text(arr.shape)}",
            field=spec.name,
        )
    return arr


def _cast(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    want = spec.dtype
    kind = arr.dtype.kind
    name = spec.name
    if spec.datatype == "BYTES":
        if kind in "US":
            return arr.astype(object)
        if kind == "O":
            bad = _first(arr, lambda v: not isinstance(v, str | bytes))
            if bad is not None:
                got = _describe_value(bad[1])
                raise InvalidInput(f"input '{name}': expected BYTES (string), got {got} at index {bad[0]}", field=name)
            return arr
        raise InvalidInput(f"input '{name}': expected BYTES (string), got {_kind_word(arr)}", field=name)
    if kind == "O":
        arr = _object_to_numeric(spec, arr)
        kind = arr.dtype.kind
    if kind in "US":
        raise InvalidInput(
            f"input '{name}': expected {spec.datatype} ({_kind_word_dtype(want)}), got string", field=name
        )
    if want.kind == "b":
        if kind != "b":
            raise InvalidInput(f"input '{name}': expected BOOL (true/false), got {_kind_word(arr)}", field=name)
        return arr
    if kind == "b":
        raise InvalidInput(
            f"input '{name}': expected {spec.datatype} ({_kind_word_dtype(want)}), got boolean", field=name
        )
    if want.kind == "f":
        if kind == "f" and not spec.allow_nonfinite:
            finite = np.isfinite(arr)
            if not finite.all():
                where = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise InvalidInput(
                    f"input '{name}': non-finite value (NaN or Infinity) at index {list(where)}; "
                    "this model needs finite numbers",
                    field=name,
                )
        return arr if arr.dtype == want else arr.astype(want)
    # integer targets
    if kind == "f" and not (np.isfinite(arr).all() and np.equal(np.mod(arr, 1), 0).all()):
        raise InvalidInput(f"input '{name}': expected {spec.datatype} (integer), got a non-integer number", field=name)
    info = np.iinfo(want)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise InvalidInput(
            f"input '{name}': value out of range for {spec.datatype} ({info.min}..{info.max})", field=name
        )
    return arr if arr.dtype == want else arr.astype(want)


def _object_to_numeric(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """Object arrays come from JSON with mixed element types or nulls."""

    def bad_element(v: Any) -> bool:
        if v is None:
            return not spec.allow_nonfinite
        if spec.datatype == "BOOL":
            return not isinstance(v, bool | np.bool_)
        return isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating)

    bad = _first(arr, bad_element)
    if bad is not None:
        idx, value = bad
        expected = f"{spec.datatype} ({_kind_word_dtype(spec.dtype)})"
        if spec.datatype == "BOOL":
            expected = "BOOL (true/false)"
        raise InvalidInput(
            f"input '{spec.name}': expected {expected}, got {_describe_value(value)} at index {idx}", field=spec.name
        )
    if spec.datatype == "BOOL":
        return arr.astype(bool)
    return np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711


def _first(arr: np.ndarray, pred: Any) -> tuple[list[int], Any] | None:
    for idx, value in np.ndenumerate(arr):
        if pred(value):
            return [int(i) for i in idx], value
    return None


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else repr(value)
        return f"string {text[:40]!r}" if isinstance(value, str) else "bytes"
    if isinstance(value, int | float | np.number):
        return "number"
    if isinstance(value, list | dict):
        return "array" if isinstance(value, list) else "object"
    return type(value).__name__


def _kind_word(arr: np.ndarray) -> str:
    return _KIND_WORDS.get(arr.dtype.kind, str(arr.dtype))


def _kind_word_dtype(dt: np.dtype[Any]) -> str:
    return _KIND_WORDS.get(dt.kind, str(dt))
