"""Reading an MLflow model directory's ``MLmodel`` file: flavours, signature and input example.

MLflow records a signature as JSON strings inside the YAML: column-based (``[{"type": "double", "name": "a"}]``,
one 1-D input per column) or tensor-based (``[{"type": "tensor", "tensor-spec": {"dtype": "float32",
"shape": [-1, 4]}}]``). The input example (``input_example.json``) gives each input's example value for the
API docs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..datatypes import datatype_of
from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec

INSTALL = "MLflow models need PyYAML and MLflow: pip install 'modelapi[mlflow]'"

#: MLflow column types -> Open Inference Protocol datatypes
COLUMN_TYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
}


@dataclass
class MLmodel:
    path: Path
    flavors: dict[str, Any]
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] = ()
    examples: dict[str, Any] = field(default_factory=dict)
    #: a tensor-based signature (numpy inputs) rather than a column-based one (a pandas DataFrame)
    tensor_inputs: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


def read_mlmodel(directory: Path) -> MLmodel:
    try:
        import yaml
    except ImportError:
        raise ModelLoadError(INSTALL) from None
    mlmodel = directory / "MLmodel"
    try:
        data: Any = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {mlmodel}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict) or not data["flavors"]:
        raise ModelLoadError(f"{mlmodel} names no flavors; is this an MLflow model directory?")
    model = MLmodel(directory, data["flavors"], raw=data)
    signature = data.get("signature") or {}
    try:
        if signature.get("inputs"):
            items = json.loads(signature["inputs"])
            model.inputs = _specs(items, "input")
            model.tensor_inputs = any(item.get("type") == "tensor" for item in items)
        if signature.get("outputs"):
            model.outputs = _specs(json.loads(signature["outputs"]), "prediction")
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{mlmodel}: cannot read its signature: {exc}") from exc
    if model.inputs is not None:
        model.examples = _example(directory, data.get("saved_input_example_info") or {}, model.inputs)
    return model


def _specs(items: list[dict[str, Any]], default_name: str) -> tuple[TensorSpec, ...]:
    specs = []
    for i, item in enumerate(items):
        name = item.get("name") or (default_name if len(items) == 1 else f"{default_name}_{i}")
        kind = item.get("type")
        if kind == "tensor":
            tensor = item["tensor-spec"]
            shape = tuple(int(d) for d in tensor.get("shape") or [-1])
            datatype = datatype_of(np.dtype(tensor["dtype"]))
            specs.append(TensorSpec(name, datatype, (-1, *shape[1:]) if shape else (-1,)))
        elif kind in COLUMN_TYPES:
            specs.append(TensorSpec(name, COLUMN_TYPES[kind], (-1,)))
        else:
            raise ValueError(
                f"column '{name}' has type {kind!r}; modelapi serves {', '.join(COLUMN_TYPES)} and tensors"
            )
    return tuple(specs)


def _example(directory: Path, info: dict[str, Any], inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """The first row of the saved input example, per input name; {} when there is none or it does not fit."""
    artifact = info.get("artifact_path")
    if not isinstance(artifact, str):
        return {}
    target = (directory / artifact).resolve()
    if not target.is_relative_to(directory.resolve()) or not target.is_file():
        return {}
    try:
        data: Any = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    names = [s.name for s in inputs]
    if isinstance(data, dict) and "columns" in data and data.get("data"):
        return {c: v for c, v in zip(data["columns"], data["data"][0], strict=False) if c in names}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return {k: v for k, v in data[0].items() if k in names}
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, dict):
        return {k: v[0] for k, v in data.items() if k in names and isinstance(v, list) and v}
    if isinstance(data, list) and data and len(inputs) == 1:
        return {names[0]: data[0]}
    return {}


def with_examples(specs: tuple[TensorSpec, ...], examples: dict[str, Any]) -> tuple[TensorSpec, ...]:
    return tuple(replace(s, example=examples[s.name]) if s.name in examples else s for s in specs)


def mlflow_signature(model: MLmodel, outputs: tuple[TensorSpec, ...]) -> Signature | None:
    if model.inputs is None:
        return None
    return Signature(with_examples(model.inputs, model.examples), outputs)
