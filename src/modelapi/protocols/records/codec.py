"""Friendly JSON records <-> the data plane's request and answer (query strings: ``query.py``).

A record is one row as a JSON object, ``{"input_name": value, ...}``: a scalar for a 1-D input (shape
``[-1]``), a nested list of the row shape for an input of shape ``[-1, *rest]``. A body is one record
(answered with one object) or a non-empty list of records (answered with ``{"predictions": [...]}``).

Answers rename two outputs so every classifier reads the same (see ``answer_keys``): the prediction (the
``prediction`` output, else ``label``, else the first output) becomes ``prediction``; an output named
``probabilities``, else the first other output that carries class labels, becomes ``probabilities``. An
output with ``labels`` along its last axis is written as an object keyed by label; NaN/Infinity become null.
Every other output keeps its own name.

``encode_json`` writes the answer's JSON itself when every output is a number per row, or a labelled row of
numbers, in many rows: orjson writes each output's values once, as one list, split at its commas, and one
``join`` puts them between the pieces of a row's JSON (keys written by orjson once, when the plan is made): the
same bytes as encoding the row objects, without building a dict or two per row (about 3/4 of the cost per row).
Any other answer, and one of a few rows, is encoded from the row objects.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import orjson

from ... import jsonutil
from ...datatypes import json_type
from ...errors import InvalidInput
from ...inference import InferenceRequest, InferenceResponse
from ...signature import Signature, TensorSpec
from ..columns import fast_column
from ..common import check_row_limit, describe, integer_range, primary_output, to_plain

_WORDS = {"boolean": "true or false", "string": "a string", "integer": "an integer", "number": "a number"}
_PLURALS = {"boolean": "booleans", "string": "strings", "integer": "integers", "number": "numbers"}


# checking one value ---------------------------------------------------------------------------------------
def expected_words(spec: TensorSpec, dims: Sequence[int] | None = None) -> str:
    dims = spec.row_shape if dims is None else dims
    word = _WORDS[json_type(spec.datatype)]
    if spec.allow_nonfinite and json_type(spec.datatype) == "number":
        word += " or null"
    if not dims:
        return word
    shape = "[" + ", ".join(str(d) if d >= 0 else "n" for d in dims) + "]"
    return f"an array of shape {shape} of {_PLURALS[json_type(spec.datatype)]}"


def _scalar_problem(spec: TensorSpec, value: Any) -> str | None:
    kind = json_type(spec.datatype)
    t = type(value)
    if kind == "boolean":
        ok = t is bool
    elif kind == "string":
        ok = t is str
    elif kind == "number":
        ok = t is float or t is int or (value is None and spec.allow_nonfinite)
    else:
        ok = t is int or (t is float and value.is_integer())
        if ok:
            low, high = integer_range(spec.dtype)
            # a JSON integer below int64's range arrives as a float rounded to -2**63: never take that as exact
            if not low <= value <= high or (t is float and value <= -(2.0**63)):
                return f"expected an integer in {low}..{high} ({spec.datatype}), got {describe(value)}"
    return None if ok else f"expected {expected_words(spec, ())}, got {describe(value)}"


def value_problem(spec: TensorSpec, value: Any, dims: Sequence[int] | None = None, path: str = "") -> str | None:
    """What is wrong with ``value`` as one row of ``spec`` (``None``: nothing), naming the input."""
    dims = spec.row_shape if dims is None else dims
    if not dims:
        problem = _scalar_problem(spec, value)
        return None if problem is None else f"'{spec.name}'{path} {problem}"
    if not isinstance(value, list) or (dims[0] >= 0 and len(value) != dims[0]):
        return f"'{spec.name}'{path} expected {expected_words(spec, dims)}, got {describe(value)}"
    for i, item in enumerate(value):
        problem = value_problem(spec, item, dims[1:], f"{path}[{i}]")
        if problem is not None:
            return problem
    return None


def check_names(names: Iterable[str], signature: Signature, where: str, what: str = "fields") -> None:
    """Raise ``InvalidInput`` naming missing and unknown names (``where``: e.g. ``record 3``)."""
    given = list(names)
    expected = signature.input_names
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in set(expected)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"'{n}'" for n in missing))
        if unknown:
            parts.append("unknown " + ", ".join(f"'{n}'" for n in unknown[:20]))
        first = missing[0] if missing else unknown[0]
        raise InvalidInput(f"{where}: {'; '.join(parts)}; expected {what}: {', '.join(expected)}", field=first)


def column(spec: TensorSpec, values: list[Any]) -> np.ndarray:
    """Checked row values -> one array (first axis: rows)."""
    try:
        if spec.datatype == "BYTES":
            if not spec.row_shape:
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                return arr
            return np.array(values, dtype=object)
        if spec.dtype.kind == "f":
            return np.array(values, dtype=np.float64)  # None -> NaN; the signature casts to the width
        return np.array(values, dtype=spec.dtype)
    except (ValueError, OverflowError):
        raise InvalidInput(f"input '{spec.name}': the rows have different shapes", field=spec.name) from None


def check_rows(spec: TensorSpec, values: Sequence[Any], label: str) -> None:
    """Check every row of one input; ``label`` names a row, e.g. ``record`` -> ``record 3: ...``."""
    for i, value in enumerate(values):
        problem = value_problem(spec, value)
        if problem is not None:
            raise InvalidInput(f"{label} {i}: {problem}", field=spec.name)


# records -> request --------------------------------------------------------------------------------------
def decode(body: Any, signature: Signature, *, max_rows: int | None = None) -> tuple[InferenceRequest, bool]:
    """A parsed JSON body -> (request, whether the body was a single record)."""
    if isinstance(body, dict):
        records: list[Any] = [body]
    elif isinstance(body, list) and body:
        records = body
    else:
        got = "an empty list" if body == [] else describe(body)
        raise InvalidInput(
            f"expected one record (a JSON object such as {_example_text(signature)}) "
            f"or a non-empty list of records; got {got}"
        )
    check_row_limit(len(records), max_rows, "records")
    expected, getters = signature.memo("records.decode", _decode_plan, signature)
    columns = _columns(records, len(expected), getters)
    if columns is None:  # find the first record that is not an object of the input names, and name it
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InvalidInput(f"record {i}: expected an object of named fields, got {describe(record)}")
            if record.keys() != expected:
                check_names(record, signature, f"record {i}")
        columns = _values(records, getters)
    inputs = {}
    for spec, values in columns:
        arr = fast_column(spec, values)
        if arr is None:  # something to look at element by element: the checked path names it
            check_rows(spec, values, "record")
            arr = column(spec, values)
        inputs[spec.name] = arr
    return InferenceRequest(inputs), isinstance(body, dict)


def _decode_plan(
    signature: Signature,
) -> tuple[frozenset[str], list[tuple[TensorSpec, Callable[[dict[str, Any]], Any]]]]:
    """A record's expected keys, and each input with a getter of its value from a record, in signature order."""
    return frozenset(signature.input_names), [(spec, operator.itemgetter(spec.name)) for spec in signature.inputs]


def _columns(
    records: list[Any], n: int, getters: list[tuple[TensorSpec, Callable[[dict[str, Any]], Any]]]
) -> list[tuple[TensorSpec, list[Any]]] | None:
    """Each input with its values, one per record, when every record is an object of exactly the ``n`` input
    names; else ``None``. Checked in C, with no Python per record: a record that lacks a name, or is no object,
    fails a getter; one with other fields too is longer than ``n``."""
    try:
        if max(map(len, records)) != n:
            return None
        return _values(records, getters)
    except (KeyError, TypeError):
        return None


def _values(
    records: list[Any], getters: list[tuple[TensorSpec, Callable[[dict[str, Any]], Any]]]
) -> list[tuple[TensorSpec, list[Any]]]:
    return [(spec, list(map(getter, records))) for spec, getter in getters]


def _example_text(signature: Signature) -> str:
    text = ", ".join(f'"{k}": ...' for k in signature.input_names[:4])
    return "{" + text + (", ..." if len(signature.inputs) > 4 else "") + "}"


# response -> records --------------------------------------------------------------------------------------
def answer_keys(signature: Signature) -> dict[str, str]:
    """Output name -> key in a friendly answer, prediction first."""
    primary = primary_output(signature)
    keys: dict[str, str] = {}
    if primary is not None:
        keys[primary] = "prediction"
    names = signature.output_names
    probs = (
        "probabilities"
        if "probabilities" in names
        else next((s.name for s in signature.outputs if s.labels is not None and s.name != primary), None)
    )
    if probs is not None and probs != primary:
        keys[probs] = "probabilities"
    for name in names:
        keys.setdefault(name, name)
    return keys


def labelled(spec: TensorSpec | None, arr: np.ndarray) -> list[str] | None:
    """String keys for an output whose last axis carries labels, if the array fits them."""
    if spec is None or spec.labels is None or arr.ndim < 2 or arr.shape[-1] != len(spec.labels):
        return None
    return [str(to_plain(np.asarray(label))) for label in spec.labels]


def encode_rows(outputs: Mapping[str, np.ndarray], signature: Signature) -> list[dict[str, Any]]:
    """Outputs -> one object per row, keyed as ``answer_keys`` says."""
    names, rows_of, plan = signature.memo(("records.answer", *outputs), _plan, outputs, signature)
    columns: list[list[Any]] = []
    for name, keys, keyed in plan:
        arr = outputs[name]
        if type(arr) is not np.ndarray:
            arr = np.asarray(arr)
        values = to_plain(arr)
        if keys is not None and arr.ndim >= 2 and arr.shape[-1] == len(keys):
            # the common case, a row of class probabilities: one dict per row
            values = keyed(keys, values) if arr.ndim == 2 else _keyed_rows(keys, values)
        columns.append(values)
    # every output has one entry per row (the data plane checked)
    return rows_of(names, zip(*columns, strict=False))


#: how ``encode_rows`` answers one output: its name, its label keys (``None``: none), and ``row_dicts`` for them
_Column = tuple[str, list[str] | None, Callable[[Sequence[str], Iterable[Sequence[Any]]], list[dict[str, Any]]]]


def _plan(
    outputs: Iterable[str], signature: Signature
) -> tuple[list[str], Callable[[Sequence[str], Iterable[Sequence[Any]]], list[dict[str, Any]]], list[_Column]]:
    """For outputs of these names: their keys in an answer, in its order, with ``row_dicts`` for them; and each
    output's name, label keys and ``row_dicts`` for those, in the same order."""
    keys = answer_keys(signature)
    rank = {name: i for i, name in enumerate(keys)}
    order = sorted(outputs, key=lambda n: rank.get(n, len(keys)))
    plan: list[_Column] = []
    for name in order:
        spec = signature.output(name)
        labels = None if spec is None or spec.labels is None else spec.labels
        label_keys = None if labels is None else [str(to_plain(np.asarray(label))) for label in labels]
        plan.append((name, label_keys, _row_dicts_for(len(label_keys or ()))))
    return [keys.get(name, name) for name in order], _row_dicts_for(len(order)), plan


def row_dicts(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """One dict per row, ``keys`` to the row's values (every row has ``len(keys)`` values)."""
    return _row_dicts_for(len(keys))(keys, rows)


def _row_dicts_for(n: int) -> Callable[[Sequence[str], Iterable[Sequence[Any]]], list[dict[str, Any]]]:
    """``row_dicts`` for ``n`` keys."""
    return _zipped_dicts if n > _MAX_BUILT_KEYS else _dict_builder(n)


def _zipped_dicts(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(keys, row, strict=False)) for row in rows]


_MAX_BUILT_KEYS = 64


@functools.cache
def _dict_builder(n: int) -> Callable[[Sequence[str], Iterable[Sequence[Any]]], list[dict[str, Any]]]:
    """A function building one dict per row with ``n`` keys from a dict display, ``{k0: v0, k1: v1, ...}``.

    A display costs about a third of ``dict(zip(keys, row))``, which was most of a friendly answer's encoding
    (docs/benchmarks-log.md). Written as source, like the dataclasses module writes ``__init__``: only generated
    names appear in it; the keys themselves are an argument.
    """
    if n == 0:
        return lambda keys, rows: [{} for _ in rows]
    ks = "".join(f"k{i}, " for i in range(n))
    vs = "".join(f"v{i}, " for i in range(n))
    display = ", ".join(f"k{i}: v{i}" for i in range(n))
    source = f"def build(keys, rows):\n    {ks}= keys\n    return [{{{display}}} for {vs}in rows]\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - generated from n alone
    return cast(Callable[[Sequence[str], Iterable[Sequence[Any]]], list[dict[str, Any]]], namespace["build"])


def _keyed_rows(label_keys: list[str], rows: list[Any]) -> list[Any]:
    return [_keyed(label_keys, row) for row in rows]


def _keyed(label_keys: list[str], row: Any) -> Any:
    if row and isinstance(row[0], list):
        return [_keyed(label_keys, r) for r in row]
    return dict(zip(label_keys, row, strict=True))


def encode(response: InferenceResponse, signature: Signature, *, single: bool) -> dict[str, Any]:
    rows = encode_rows(response.outputs, signature)
    return rows[0] if single else {"predictions": rows}


def encode_json(response: InferenceResponse, signature: Signature, *, single: bool) -> bytes:
    """``encode``'s answer as JSON: the bytes ``jsonutil.dumps(encode(...))`` gives."""
    outputs = response.outputs
    if not single:
        template = signature.memo(("records.json", *outputs), _json_plan, outputs, signature)
        if template is not None:
            written = _written(outputs, *template)
            if written is not None:
                return b'{"predictions":[' + written + b"]}"
    rows = encode_rows(outputs, signature)  # (``encode``, inline: a call less)
    return jsonutil.dumps(rows[0] if single else {"predictions": rows})


#: from this many rows on, ``encode_json`` writes the answer itself (about where the two cost the same)
_WRITTEN_ROWS = 12

#: ``encode_json``'s plan: the pieces of a row's JSON around its values (one more than the values), and each
#: output's name with its number of values in a row (``None``: one, not keyed; a count: that many, by label)
_Template = tuple[list[bytes], list[tuple[str, int | None]]]


def _json_plan(outputs: Iterable[str], signature: Signature) -> _Template | None:
    names, _, plan = signature.memo(("records.answer", *outputs), _plan, outputs, signature)
    if not names or len(set(names)) != len(names):  # (two outputs under one key: the row objects say which stays)
        return None  # (no outputs: no values to count rows by; the row objects make an empty list)
    pieces = [b"{"]
    widths: list[tuple[str, int | None]] = []
    for key, (name, label_keys, _) in zip(names, plan, strict=True):
        if len(pieces) > 1:
            pieces[-1] += b","
        pieces[-1] += orjson.dumps(key) + b":"
        if label_keys is None:
            widths.append((name, None))
        elif len(set(label_keys)) != len(label_keys):  # two labels, one key ("1" for 1 and "1"): one stays
            return None
        elif label_keys:
            pieces[-1] += b"{"
            for i, label in enumerate(label_keys):
                pieces[-1] += (b"," if i else b"") + orjson.dumps(label) + b":"
                pieces.append(b"")
            pieces[-1] += b"}"
            widths.append((name, len(label_keys)))
            continue
        else:
            return None
        pieces.append(b"")
    pieces[-1] += b"}"
    return pieces, widths


def _written(
    outputs: Mapping[str, np.ndarray], around: list[bytes], widths: list[tuple[str, int | None]]
) -> bytes | None:
    """The answer's row objects, written as JSON and joined by commas; ``None`` when an output is not numbers
    of the planned shape (or the outputs' row counts differ)."""
    n = -1
    values: list[list[bytes]] = []  # each value's place in a row: its tokens, one per row
    for name, width in widths:
        arr = outputs[name]
        if type(arr) is not np.ndarray or arr.dtype.kind not in "biuf" or arr.ndim != (1 if width is None else 2):
            return None
        if n < 0:
            n = len(arr)
            if n < _WRITTEN_ROWS:  # a few rows: their objects cost less than the pieces
                return None
        elif len(arr) != n:
            return None
        # numbers, null, true and false hold no commas: orjson's list of them, split at the commas
        if width is None:
            values.append(orjson.dumps(to_plain(arr))[1:-1].split(b","))
        elif arr.shape[1] != width:
            return None
        else:
            tokens = orjson.dumps(to_plain(arr.ravel()))[1:-1].split(b",")
            values.extend(tokens[i::width] for i in range(width))
    stride = 2 * len(values)
    pieces = [b""] * (stride * n + 1)
    pieces[0::stride] = [around[-1] + b"," + around[0]] * n + [around[-1]]
    pieces[0] = around[0]
    for i, tokens in enumerate(values):
        pieces[2 * i + 1 :: stride] = tokens
        if i:
            pieces[2 * i :: stride] = [around[i]] * n
    return b"".join(pieces)
