"""ONNX models on onnxruntime (CPU). The signature comes from the graph; external data stays in the model dir."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec
from .base import Model

_INSTALL = "ONNX models need onnxruntime: pip install 'modelapi[onnx]'"

#: onnxruntime's element type names -> Open Inference Protocol datatypes
ONNX_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
_LABEL_ATTRS = ("classlabels_strings", "classlabels_int64s")


class OnnxModel(Model):
    platform: ClassVar[str] = "onnx"

    def __init__(self, session: Any, proto: Any, path: Path) -> None:
        self.session = session
        labels = _class_labels(proto)
        inputs, self._column_inputs = _input_specs(session.get_inputs())
        outputs, self._zipmaps = _output_specs(session.get_outputs(), labels)
        self.signature = Signature(inputs, outputs)
        self._output_names = [o.name for o in outputs]
        self.info = {
            "format": "onnx",
            "source": str(path),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "providers": list(session.get_providers()),
        }

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: (v.reshape(-1, 1) if k in self._column_inputs else v) for k, v in inputs.items()}
        results = self.session.run(self._output_names, feed)
        out: dict[str, np.ndarray] = {}
        for name, value in zip(self._output_names, results, strict=True):
            keys = self._zipmaps.get(name)
            out[name] = _unzip(value, keys) if keys is not None else np.asarray(value)
        return out


def load_onnx(path: Path) -> OnnxModel:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ModelLoadError(_INSTALL) from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {exc}") from exc
    check_external_data(proto, path)
    try:
        session = ort.InferenceSession(str(path), ort.SessionOptions(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}") from exc
    return OnnxModel(session, proto, path)


# external data ------------------------------------------------------------------------------------------------
def check_external_data(proto: Any, path: Path) -> None:
    """Refuse external-data locations outside the model's directory (``../``, absolute, escaping symlinks)."""
    base = path.resolve().parent
    for tensor in _tensors(proto):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not _inside(base, location):
            raise ModelLoadError(
                f"{path}: tensor '{tensor.name}' keeps its data at {location!r}, outside the model's directory; "
                "external data must be a relative path inside the directory of the .onnx file"
            )


def _inside(base: Path, location: str) -> bool:
    if not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        return False
    try:
        return (base / location).resolve().is_relative_to(base)
    except (OSError, ValueError):  # a symlink loop, a NUL byte
        return False


def _tensors(proto: Any) -> Iterator[Any]:
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _attribute_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


# signature --------------------------------------------------------------------------------------------------
def _class_labels(proto: Any) -> tuple[Any, ...] | None:
    """Class labels of the first classifier (or ZipMap) node in the graph, if any."""
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return tuple(s.decode("utf-8") for s in attr.strings)
            if attr.name == "classlabels_int64s" and attr.ints:
                return tuple(int(i) for i in attr.ints)
    return None


def _shape(dims: Sequence[Any] | None) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (dims or ()))


def _datatype(kind: str, what: str) -> str:
    datatype = ONNX_DATATYPES.get(kind)
    if datatype is None:
        raise ModelLoadError(f"{what} has type {kind}, which modelapi cannot serve; supported: {_supported()}")
    return datatype


def _supported() -> str:
    return ", ".join(ONNX_DATATYPES)


def _input_specs(args: Sequence[Any]) -> tuple[tuple[TensorSpec, ...], set[str]]:
    specs, columns = [], set()
    for arg in args:
        shape = _shape(arg.shape)
        if not shape:
            raise ModelLoadError(f"ONNX input '{arg.name}' is a scalar; modelapi needs a row (batch) axis first")
        if len(shape) == 2 and shape == (-1, 1):  # a column: serve it as one 1-D feature
            columns.add(arg.name)
            shape = (-1,)
        specs.append(TensorSpec(arg.name, _datatype(arg.type, f"ONNX input '{arg.name}'"), shape))
    return tuple(specs), columns


def _output_specs(
    args: Sequence[Any], labels: tuple[Any, ...] | None
) -> tuple[tuple[TensorSpec, ...], dict[str, tuple[Any, ...]]]:
    specs: list[TensorSpec] = []
    zipmaps: dict[str, tuple[Any, ...]] = {}
    for arg in args:
        if arg.type.startswith("seq(map(") and labels is not None:
            zipmaps[arg.name] = labels
            specs.append(TensorSpec(arg.name, "FP64", (-1, len(labels)), labels=labels))
            continue
        shape = _shape(arg.shape) or (-1,)
        specs.append(TensorSpec(arg.name, _datatype(arg.type, f"ONNX output '{arg.name}'"), shape))
    if labels is not None and not zipmaps:
        specs = _attach_labels(specs, labels)
    return tuple(specs), zipmaps


def _attach_labels(specs: list[TensorSpec], labels: tuple[Any, ...]) -> list[TensorSpec]:
    """Put class labels on the one 2-D float output whose last axis has one entry per class."""
    floats = [s for s in specs if s.datatype in ("FP16", "FP32", "FP64") and len(s.shape) == 2]
    exact = [s for s in floats if s.shape[1] == len(labels)]
    candidates = exact or [s for s in floats if s.shape[1] == -1]
    if len(candidates) != 1:
        return specs
    chosen = candidates[0]
    labelled = TensorSpec(chosen.name, chosen.datatype, (chosen.shape[0], len(labels)), labels=labels)
    return [labelled if s is chosen else s for s in specs]


def _unzip(value: Any, keys: tuple[Any, ...]) -> np.ndarray:
    """ZipMap's list of {label: probability} -> an [N, n_classes] array in label order."""
    rows = list(value)
    out = np.empty((len(rows), len(keys)), dtype=np.float64)
    for i, row in enumerate(rows):
        out[i] = [row[k] for k in keys]
    return out
