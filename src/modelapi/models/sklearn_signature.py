"""A signature derived from a fitted scikit-learn estimator.

Fitted on a DataFrame (``feature_names_in_``): one 1-D input per column, ``BYTES`` or integer where the column
feeds a categorical encoder (from the encoder's ``categories_``), ``FP64`` otherwise. Fitted on an array: one
input ``input`` of shape ``[-1, n_features_in_]``. NaN passes validation where the estimator can take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec

# What an estimator does with NaN in its input: drops it (imputer, or a predictor that handles it), passes it
# on (a scaler), or fails.
NanFate = Literal["removes", "passes", "fails"]


def derive_signature(est: Any) -> tuple[Signature, tuple[str, ...] | None]:
    """The signature of a fitted estimator, and its feature names (``None``: one array input)."""
    if not hasattr(est, "predict"):
        raise ModelLoadError(f"{type(est).__name__} has no predict method; modelapi serves predictors")
    outputs = _outputs(est)
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        names = tuple(str(n) for n in names)
        nan_ok = _feature_nan_ok(est, names)
        cats = categorical_columns(est)
        inputs = tuple(_feature_spec(n, cats.get(n), nan_ok[n]) for n in names)
        return Signature(inputs, outputs), names
    n_features = getattr(est, "n_features_in_", None)
    if n_features is None:
        raise ModelLoadError(f"{type(est).__name__} does not record how many features it takes (n_features_in_)")
    spec = TensorSpec("input", "FP64", (-1, int(n_features)), allow_nonfinite=_fate(est) != "fails")
    return Signature((spec,), outputs), None


def _feature_spec(name: str, cat: Categorical | None, nan_ok: bool) -> TensorSpec:
    if cat is None:
        return TensorSpec(name, "FP64", (-1,), allow_nonfinite=nan_ok)
    nan_ok = nan_ok and cat.datatype != "BYTES"
    # a known category as the example: the docs show a value that works, and the warm-up predicts on it
    known = _plain_values(np.asarray(cat.categories)) if cat.categories else ()
    example = known[0] if known else None
    return TensorSpec(
        name,
        cat.datatype,
        (-1,),
        allow_nonfinite=nan_ok,
        description=cat.describe(),
        example=example,
        categories=tuple(known),
    )


def _outputs(est: Any) -> tuple[TensorSpec, ...]:
    classes = getattr(est, "classes_", None)
    if classes is None:
        n = _n_targets(est)
        return (TensorSpec("prediction", "FP64", (-1,) if n is None else (-1, n)),)
    if isinstance(classes, list):  # multi-output classifier: one label per target, no probabilities
        return (TensorSpec("label", _datatype(np.asarray(classes[0])), (-1, len(classes))),)
    classes = np.asarray(classes)
    specs = [TensorSpec("label", _datatype(classes), (-1,))]
    if hasattr(est, "predict_proba"):
        specs.append(TensorSpec("probabilities", "FP64", (-1, len(classes)), labels=_plain_values(classes)))
    return tuple(specs)


def _n_targets(est: Any) -> int | None:
    """Number of regression targets when predict answers 2-D, else ``None``."""
    final = _final(est)
    n_outputs = getattr(final, "n_outputs_", None)
    if n_outputs is not None:
        return int(n_outputs) if n_outputs > 1 else None
    coef = getattr(final, "coef_", None)
    if coef is not None and np.ndim(coef) == 2:
        return int(np.shape(coef)[0])
    return None


def _datatype(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind in "OUS":
        return "BYTES"
    if kind in "iu":
        return "INT64"
    if kind == "b":
        return "BOOL"
    return "FP64"


def _final(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return _final(steps[-1][1]) if steps else est


def _steps(est: Any) -> list[Any]:
    steps = getattr(est, "steps", None)
    if steps is None:
        return [est]
    return [s for _, s in steps if s is not None and s != "passthrough"]


def _column_transformer(est: Any) -> Any:
    """The ColumnTransformer that sees the raw columns: the estimator itself or a pipeline's first step."""
    first = _steps(est)[0]
    if hasattr(first, "transformers_"):
        return first
    if hasattr(first, "steps"):
        return _column_transformer(first)
    return None


def _routes(ct: Any) -> list[tuple[Any, list[str]]]:
    """(transformer, input column names) for each part of a fitted ColumnTransformer."""
    all_names = np.asarray(ct.feature_names_in_, dtype=object)
    # scikit-learn resolves every column spec (names, ints, masks, slices, selectors) to indices when fitting
    indices = getattr(ct, "_transformer_to_input_indices", None)
    out = []
    for name, trans, cols in ct.transformers_:
        if isinstance(indices, dict) and name in indices:
            picked = all_names[np.asarray(indices[name], dtype=np.intp)]
        elif isinstance(cols, str):
            picked = np.asarray([cols], dtype=object)
        elif all(isinstance(c, str) for c in np.atleast_1d(cols)):
            picked = np.atleast_1d(cols)
        else:  # ints, a mask or a slice, on a scikit-learn without the resolved indices
            picked = np.atleast_1d(all_names[cols])
        out.append((trans, [str(n) for n in picked]))
    return out


def categorical_columns(est: Any) -> dict[str, Categorical]:
    """The raw columns that feed a categorical encoder inside a ColumnTransformer, keyed by name."""
    ct = _column_transformer(est)
    if ct is None:
        return {}
    out: dict[str, Categorical] = {}
    for trans, names in _routes(ct):
        enc = None if isinstance(trans, str) else next((s for s in _steps(trans) if _is_encoder(s)), None)
        if enc is None or enc.n_features_in_ != len(names):
            continue
        strict = getattr(enc, "handle_unknown", "error") == "error"
        enc_names = getattr(enc, "feature_names_in_", names)
        for name, cats in zip(enc_names, enc.categories_, strict=True):
            cats = np.asarray(cats)
            out[str(name)] = Categorical(_datatype(cats), _plain_values(cats), strict)
    return out


@dataclass(frozen=True)
class Categorical:
    """A column an encoder learnt categories for; ``strict``: other values make the encoder fail."""

    datatype: str
    categories: tuple[Any, ...]
    strict: bool

    def describe(self) -> str:
        shown = ", ".join(repr(c) for c in self.categories[:_SHOW])
        more = f" (and {len(self.categories) - _SHOW} more)" if len(self.categories) > _SHOW else ""
        return f"one of {shown}{more}"


_SHOW = 20


def _plain_values(values: np.ndarray) -> tuple[Any, ...]:
    return tuple(v.item() if isinstance(v, np.generic) else v for v in values)


def _is_encoder(est: Any) -> bool:
    cats = getattr(est, "categories_", None)
    return isinstance(cats, list) and hasattr(est, "n_features_in_")


def _feature_nan_ok(est: Any, names: tuple[str, ...]) -> dict[str, bool]:
    steps = _steps(est)
    ct = _column_transformer(est)
    if ct is None or ct is not steps[0]:
        ok = _fate(est) != "fails"
        return dict.fromkeys(names, ok)
    rest = _compose(steps[1:])
    out = dict.fromkeys(names, rest != "fails")  # remainder="drop": the column never reaches anything
    for trans, cols in _routes(ct):
        fate = "passes" if trans == "passthrough" else "removes" if trans == "drop" else _fate(trans)
        for col in cols:
            out[col] = _then(fate, rest) != "fails"
    return out


def _fate(est: Any) -> NanFate:
    if hasattr(est, "steps"):
        return _compose(_steps(est))
    if type(est).__module__.startswith("sklearn.impute"):
        return "removes"
    if not _allows_nan(est):
        return "fails"
    return "removes" if hasattr(est, "predict") or _is_encoder(est) else "passes"


def _compose(steps: list[Any]) -> NanFate:
    fate: NanFate = "passes"
    for step in steps:
        fate = _then(fate, _fate(step))
    return fate


def _then(first: NanFate, second: NanFate) -> NanFate:
    return second if first == "passes" else first


def _allows_nan(est: Any) -> bool:
    tags = getattr(est, "__sklearn_tags__", None)
    if tags is not None:
        try:
            return bool(tags().input_tags.allow_nan)
        except Exception:  # a third-party estimator's broken tags: assume the strict answer
            return False
    old = getattr(est, "_get_tags", None)  # scikit-learn < 1.6
    return bool(old().get("allow_nan", False)) if old is not None else False
