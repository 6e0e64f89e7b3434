"""Signatures of PyTorch programs: read from a ``torch.export`` program or a traced TorchScript module, or
declared in a sidecar file.

The sidecar ``<model stem>.signature.json`` sits next to the model file::

    {"inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3], "labels": ["a", "b", "c"]}]}

A traced TorchScript module (``torch.jit.trace``) stores its example inputs in the file, so its inputs' dtypes
and shapes are known (the first axis becomes the row axis) and its outputs are found by running it once on
inputs of that kind. A scripted module (``torch.jit.script``) records argument names only, so it needs a
sidecar. For an exported program or a traced module the sidecar is optional and, when present, overrides what
the file records (to name inputs and outputs or add labels).
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


#: TorchScript graph scalar type names -> torch dtype names
_SCALAR_TYPES = {
    "Float": "float32",
    "Double": "float64",
    "Half": "float16",
    "Char": "int8",
    "Short": "int16",
    "Int": "int32",
    "Long": "int64",
    "Byte": "uint8",
    "Bool": "bool",
}


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


def traced_signature(module: Any, device: Any) -> Signature:
    """Inputs of a traced TorchScript module loaded with its traced input shapes restored
    (``torch.jit.load(..., _restore_shapes=True)``), outputs from one run on zeros of those shapes."""
    import torch

    names = [a.name for a in module.forward.schema.arguments][1:]  # skip self
    values = list(module.forward.graph.inputs())[1:]
    if not names or len(names) != len(values):
        raise ModelLoadError("the traced module's forward() takes no tensor inputs; modelapi serves tensor inputs")
    inputs = []
    examples = []
    for name, value in zip(names, values, strict=True):
        kind = value.type()
        scalar = kind.scalarType() if isinstance(kind, torch._C.TensorType) else None
        sizes = kind.sizes() if scalar is not None else None
        if scalar is None or sizes is None:
            raise ModelLoadError(
                f"traced module input '{name}' is not a tensor of known dtype and shape ({kind}); "
                "declare the inputs in a sidecar"
            )
        datatype = datatype_of_torch(_SCALAR_TYPES.get(scalar, scalar), f"traced input '{name}'")
        if not sizes:
            raise ModelLoadError(f"traced module input '{name}' is a scalar; modelapi needs a row (batch) axis first")
        inputs.append(TensorSpec(name, datatype, (-1, *sizes[1:])))
        examples.append(torch.zeros(sizes, dtype=getattr(torch, _SCALAR_TYPES.get(scalar, scalar)), device=device))
    rows = examples[0].shape[0] if examples else 0
    try:
        with torch.inference_mode():
            result = module(*examples)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        raise ModelLoadError(f"the traced module fails on zeros shaped like its example inputs: {first}") from exc
    if isinstance(result, dict):
        named = [(str(k), v) for k, v in result.items()]
    else:
        results = list(result) if isinstance(result, list | tuple) else [result]
        named = [("output" if len(results) == 1 else f"output_{i}", v) for i, v in enumerate(results)]
    outputs = []
    for name, value in named:
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != rows:
            got = f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelLoadError(
                f"traced module output '{name}' ({got}) has not one row per input row ({rows}); "
                "modelapi needs the row (batch) axis first in every output"
            )
        outputs.append(TensorSpec(name, datatype_of_torch(value.dtype, f"output '{name}'"), (-1, *value.shape[1:])))
    return Signature(tuple(inputs), tuple(outputs))
