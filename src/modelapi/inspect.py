"""``modelapi inspect``: what the server would serve, as a short human summary (or JSON with ``--json``).

iris  (sklearn, version 1)
  format   skops
  source   src/modelapi/demo/iris.skops
  trust    not needed (skops, trusted types)
  inputs   sepal_length   FP64 [-1]   e.g. 5.1
           ...
  outputs  label          BYTES [-1]
           probabilities  FP64 [-1, 3]   labels: setosa, versicolor, virginica
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import jsonutil
from .models.base import Model
from .signature import TensorSpec

#: info keys shown on their own lines, in this order; the rest follow under "details"
_HEADLINE = ("format", "flavor", "source", "estimator", "objective", "device")
_SKIP = ("trust", "examples", "signature")
_MAX_LABELS = 12


def render(models: Iterable[Model], *, as_json: bool = False) -> str:
    if as_json:
        return "".join(jsonutil.dumps(m.describe()).decode() + "\n" for m in models)
    return "\n".join(summary(m) for m in models)


def summary(model: Model) -> str:
    info: dict[str, Any] = dict(getattr(model, "info", None) or {})
    lines = [f"{model.name}  ({model.platform}, version {model.version})"]
    for key in _HEADLINE:
        if info.get(key) is not None:
            lines.append(_field(key, info[key]))
    lines.append(_field("trust", info.get("trust") or "not needed"))
    lines += _tensors("inputs", model.signature.inputs, examples=True)
    lines += _tensors("outputs", model.signature.outputs, examples=False)
    rest = {k: v for k, v in info.items() if k not in _HEADLINE and k not in _SKIP and v not in (None, "", {})}
    for key, value in rest.items():
        lines.append(_field(key, value))
    return "\n".join(lines) + "\n"


def _field(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else jsonutil.dumps(value).decode()
    return f"  {key:<9} {text}"


def _tensors(title: str, specs: tuple[TensorSpec, ...], *, examples: bool) -> list[str]:
    if not specs:
        return [f"  {title:<9} (none declared)"]
    width = max(len(s.name) for s in specs)
    lines = []
    for i, spec in enumerate(specs):
        text = f"{spec.name:<{width}}  {spec.describe()}"
        if spec.labels is not None:
            shown = ", ".join(str(v) for v in spec.labels[:_MAX_LABELS])
            more = f", ... ({len(spec.labels)} in all)" if len(spec.labels) > _MAX_LABELS else ""
            text += f"   labels: {shown}{more}"
        if spec.allow_nonfinite:
            text += "   (null: missing)"
        if examples and spec.example is not None:
            text += f"   e.g. {jsonutil.dumps(spec.example).decode()}"
        if spec.description:
            text += f"   ({spec.description})"
        lines.append(f"  {title if i == 0 else '':<9} {text}")
    return lines
