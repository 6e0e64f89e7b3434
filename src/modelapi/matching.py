"""Requests written for other servers: how tensors whose names are not the model's inputs still reach them, and
the output names MLServer's runtimes use.

KServe's and MLServer's scikit-learn, XGBoost and LightGBM runtimes take one tensor of shape ``[N, n_features]``
under a name of the client's choosing (KServe's examples send ``input-0``, MLServer's ``predict``), while a
modelapi model with named features has one 1-D input per feature. ``Signature.validate`` asks this module only
when the names given are not exactly the model's inputs, so the common case costs nothing, and every front end
(V2 over REST, gRPC, V1, records) gets the same rules:

1. one tensor, a model with one input: the tensor is that input, whatever its name;
2. one tensor whose name is not an input, a model whose inputs are all 1-D features: a tensor of shape
   ``[N, n_features]`` holds the features as columns in signature order, each column cast to its feature's
   datatype. A numeric tensor suits numeric features (an integer feature takes integral values only); a BYTES
   tensor (the one tensor that can mix kinds) suits string features, and its elements for numeric features
   must be numbers written as text (``"5.1"``), read as JSON reads numbers;
3. anything else is refused with the model's inputs named: names, datatypes, shapes, count.

On the output side, a request may name ``predict`` (the model's prediction: ``prediction``, else ``label``,
else its first output) and ``predict_proba`` (``probabilities``, else the first output carrying class labels),
as MLServer's runtimes name their outputs, unless the model has outputs of those very names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInput

if TYPE_CHECKING:
    from .signature import Signature, TensorSpec

#: a number written as text, as JSON writes it (no nan, inf, hex or underscores)
_NUMBER = re.compile(r"\s*-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


def expected_inputs(signature: Signature) -> str:
    """The model's inputs in words, for every error about them: count, names, datatypes and shapes."""
    specs = signature.inputs
    listed = ", ".join(f"'{s.name}' {s.describe()}" for s in specs)
    text = f"this model takes {len(specs)} input{'s' if len(specs) != 1 else ''}: {listed}"
    if len(specs) > 1 and all(not s.row_shape for s in specs):
        text += f"; or one tensor of shape [N, {len(specs)}] with a column per input in that order"
    elif len(specs) == 1:
        text += " (one tensor under any name is taken as it)"
    return text


def match(signature: Signature, inputs: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """Inputs keyed by the model's names (cast, for the split case), or ``None`` when no rule applies."""
    if len(inputs) != 1:
        return None
    ((given, value),) = inputs.items()
    specs = signature.inputs
    if len(specs) == 1:
        return {specs[0].name: _as_only_input(specs[0], given, np.asarray(value), signature)}
    if given in signature.input_names or any(s.row_shape for s in specs):
        return None
    return _split(signature, given, np.asarray(value))


def _as_only_input(spec: TensorSpec, given: str, arr: np.ndarray, signature: Signature) -> np.ndarray:
    from .signature import _cast, _check_shape  # signature.py imports this module lazily, on its slow path

    try:
        return _cast(spec, _check_shape(spec, arr))
    except InvalidInput as exc:
        reason = _reason(exc, spec)
        raise InvalidInput(f"input '{given}', taken as '{spec.name}': {reason}; {expected_inputs(signature)}") from None


def _split(signature: Signature, given: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    from .signature import _cast  # signature.py imports this module lazily, on its slow path

    specs = signature.inputs
    width = len(specs)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr.reshape(arr.shape[:-1])
    if arr.ndim != 2 or arr.shape[1] != width:
        shape = "[" + ", ".join(str(d) for d in arr.shape) + "]"
        raise InvalidInput(
            f"input '{given}': shape {shape} does not fit; one tensor for this model's features needs shape "
            f"[N, {width}] (a column per feature); {expected_inputs(signature)}"
        )
    text = arr.dtype.kind in "OUS"
    out: dict[str, np.ndarray] = {}
    for index, spec in enumerate(specs):
        column = arr[:, index]
        where = f"input '{given}' column {index} ('{spec.name}')"
        try:
            if text and spec.datatype != "BYTES":
                column = _numbers_from_text(column, where)
            elif not text and spec.datatype == "BYTES":
                raise InvalidInput(
                    f"expected BYTES (string), got {arr.dtype.name} numbers; send one BYTES tensor (every "
                    "element a string, numbers as text) for a model with string features, or one tensor per input"
                )
            out[spec.name] = np.ascontiguousarray(_cast(spec, column))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {_reason(exc, spec)}; {expected_inputs(signature)}") from None
    return out


def _numbers_from_text(column: np.ndarray, where: str) -> np.ndarray:
    values = []
    for row, element in enumerate(column.tolist()):
        value = element.decode("utf-8", errors="replace") if isinstance(element, bytes) else element
        if not isinstance(value, str) or not _NUMBER.fullmatch(value):
            shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
            raise InvalidInput(f"expected a number written as text, got {shown} at row {row}")
        values.append(float(value))
    return np.array(values, dtype=np.float64)


def _reason(exc: InvalidInput, spec: TensorSpec) -> str:
    """The cast's own message without its leading ``input 'name': ``, which the caller words itself."""
    return exc.detail.removeprefix(f"input '{spec.name}': ")


# outputs ---------------------------------------------------------------------------------------------------


def primary_output(signature: Signature) -> str | None:
    """The output that answers "what is the prediction": ``prediction``, else ``label``, else the first."""
    names = signature.output_names
    for name in ("prediction", "label"):
        if name in names:
            return name
    return names[0] if names else None


def probabilities_output(signature: Signature) -> str | None:
    """``probabilities``, else the first output whose last axis carries class labels."""
    if signature.output("probabilities") is not None:
        return "probabilities"
    return next((s.name for s in signature.outputs if s.labels is not None), None)


def output_aliases(signature: Signature) -> dict[str, str]:
    """MLServer's output names -> this model's outputs, for the names the model does not use itself."""
    aliases = {"predict": primary_output(signature), "predict_proba": probabilities_output(signature)}
    return {alias: name for alias, name in aliases.items() if name is not None and signature.output(alias) is None}
