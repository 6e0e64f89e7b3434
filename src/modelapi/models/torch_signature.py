"""Signatures of PyTorch programs: read from a ``torch.export`` program, or declared in a sidecar file.

The sidecar ``<model stem>.signature.json`` sits next to the model file::

    {"inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": ["a", "b", "c"]}]}

TorchScript records argument names but not dtypes or shapes, so a TorchScript model needs one; for an exported
program it is optional and, when present, overrides what the program records (to name outputs or add labels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec

SIDECAR_SUFFIX = ".signature.json"

#: torch dtype names (``str(torch.float32)`` without ``torch.``) -> Open Inference Protocol datatypes
TORCH_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "bool": "BOOL",
}


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> Signature | None:
    """The signature declared next to ``path``, or ``None`` when there is no sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        data: Any = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read signature {sidecar}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list) or not data["inputs"]:
        raise ModelLoadError(
            f'signature {sidecar}: expected {{"inputs": [{{"name": ..., "datatype": ..., "shape": ...}}]}}'
        )
    try:
        inputs = tuple(_spec(item) for item in data["inputs"])
        outputs = tuple(_spec(item) for item in data.get("outputs") or [])
        return Signature(inputs, outputs)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"signature {sidecar}: {exc}") from exc


def _spec(item: Any) -> TensorSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(f'each tensor needs a "name", "datatype" and "shape"; got {item!r}')
    shape = item.get("shape", [-1])
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"tensor {item['name']!r}: shape must be a list of integers (-1: any size), got {shape!r}")
    labels = item.get("labels")
    return TensorSpec(
        item["name"], str(item.get("datatype", "FP32")), tuple(shape), labels=tuple(labels) if labels else None
    )


def datatype_of_torch(dtype: Any, what: str) -> str:
    name = str(dtype).removeprefix("torch.")
    datatype = TORCH_DATATYPES.get(name)
    if datatype is None:
        raise ModelLoadError(
            f"{what} has dtype {name}, which modelapi cannot serve; supported: {', '.join(TORCH_DATATYPES)}"
        )
    return datatype


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def exported_signature(program: Any) -> Signature:
    """Inputs and outputs of a ``torch.export`` program, from its placeholder and output nodes."""
    user_inputs = list(program.graph_signature.user_inputs)
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = []
    for name in user_inputs:
        val = nodes[name].meta.get("val") if name in nodes else None
        if val is None or not hasattr(val, "dtype"):
            raise ModelLoadError(f"exported program input '{name}' is not a tensor; modelapi serves tensor inputs")
        shape = _shape(val.shape)
        if not shape:
            raise ModelLoadError(
                f"exported program input '{name}' is a scalar; modelapi needs a row (batch) axis first"
            )
        inputs.append(TensorSpec(name, datatype_of_torch(val.dtype, f"input '{name}'"), (-1, *shape[1:])))
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    results = output_node.args[0]
    results = results if isinstance(results, list | tuple) else [results]
    outputs = []
    for i, node in enumerate(results):
        name = "output" if len(results) == 1 else f"output_{i}"
        val = getattr(node, "meta", {}).get("val")
        if val is None or not hasattr(val, "dtype"):
            raise ModelLoadError(f"exported program output {i} is not a tensor; modelapi serves tensor outputs")
        shape = _shape(val.shape) or (-1,)
        outputs.append(TensorSpec(name, datatype_of_torch(val.dtype, f"output {i}"), (-1, *shape[1:])))
    return Signature(tuple(inputs), tuple(outputs))


def merge(found: Signature, declared: Signature | None, sidecar: Path) -> Signature:
    """The declared signature where there is one, checked against the program's input and output counts."""
    if declared is None:
        return found
    if len(declared.inputs) != len(found.inputs):
        raise ModelLoadError(
            f"signature {sidecar}: declares {len(declared.inputs)} inputs, the program takes {len(found.inputs)} "
            f"({', '.join(found.input_names)})"
        )
    outputs = declared.outputs or found.outputs
    if len(outputs) != len(found.outputs):
        raise ModelLoadError(
            f"signature {sidecar}: declares {len(outputs)} outputs, the program returns {len(found.outputs)}"
        )
    return Signature(declared.inputs, outputs)
