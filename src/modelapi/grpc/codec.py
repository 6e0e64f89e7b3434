"""``ModelInferRequest`` -> the data plane's ``InferenceRequest``, and ``InferenceResponse`` -> ``ModelInferResponse``.

The request becomes exactly what the V2 REST codec builds from the same tensors (numpy arrays keyed by input
name, the requested outputs, the parameters), so every rule of the data plane and the signature applies to
gRPC unchanged. Raw contents are the binary tensor data extension's encoding, decoded by the same code
(``protocols/v2/binary.py``): little-endian, row-major, BYTES as 4-byte-length-prefixed elements.

A request that sends ``raw_input_contents`` is answered in ``raw_output_contents`` (tritonclient reads only
those); one that sends typed ``contents`` is answered in typed contents, except that an FP16 output (which has
no typed field) makes the whole answer raw, since the specification forbids mixing the two.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..datatypes import DATATYPES, datatype_of
from ..errors import InferenceError, InvalidInput, MalformedRequest
from ..inference import InferenceRequest, InferenceResponse
from ..protocols.common import integer_range
from ..protocols.v2 import binary
from ..protocols.v2.codec import SAFE_CASTS, V2Codec
from . import proto

#: datatype -> the InferTensorContents field that carries it (FP16 has none: raw only)
CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_NOT_SUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_MAX_ELEMENTS = 2**48


def parameters(entries: Any, where: str) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values; shared-memory parameters are refused as over REST."""
    out: dict[str, Any] = {}
    for key, value in entries.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    for key in _NOT_SUPPORTED_PARAMS:
        if key in out:
            raise InvalidInput(f"{where}parameters.{key}: the shared-memory extension is not supported")
    return out


def decode(message: Any, codec: V2Codec) -> tuple[InferenceRequest, bool]:
    """The data plane's request, and whether to answer in raw contents."""
    raw = message.raw_input_contents
    items = message.inputs
    if not items:
        raise MalformedRequest("inputs: must hold at least one tensor (name, datatype, shape, contents)")
    if raw and len(raw) != len(items):
        raise MalformedRequest(
            f"raw_input_contents: {len(raw)} entries for {len(items)} inputs; give one per input, in the order "
            "of inputs, or none and typed contents"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, item in enumerate(items):
        name = item.name
        if not name:
            raise MalformedRequest(f"inputs[{index}].name: missing, or not a non-empty string")
        if name in inputs:
            raise MalformedRequest(f"inputs[{index}].name: input '{name}' is given twice")
        where = f"input '{name}'"
        datatype = _datatype(item.datatype, codec.input_types.get(name), where)
        shape = _shape(item.shape, where)
        if item.parameters:
            parameters(item.parameters, f"{where}: ")
        if raw:
            if item.HasField("contents"):
                raise MalformedRequest(f"{where}: give raw_input_contents or contents for every input, not both")
            inputs[name] = binary.decode_tensor(memoryview(raw[index]), datatype, shape, where)
        else:
            inputs[name] = _typed(item.contents, datatype, shape, where)
    wanted: list[str] = []
    for index, output in enumerate(message.outputs):
        name = output.name
        if not name:
            raise MalformedRequest(f"outputs[{index}].name: missing, or not a non-empty string")
        if name in wanted:
            raise MalformedRequest(f"outputs[{index}].name: output '{name}' is requested twice")
        params = parameters(output.parameters, f"output '{name}': ") if output.parameters else {}
        if "classification" in params:
            raise InvalidInput(f"output '{name}': the classification extension is not supported")
        wanted.append(name)
    request = InferenceRequest(
        inputs,
        id=message.id or None,
        outputs=wanted or None,
        parameters=parameters(message.parameters, "") if message.parameters else {},
    )
    return request, bool(raw)


def _datatype(datatype: str, expected: str | None, where: str) -> str:
    if not datatype:
        raise MalformedRequest(f"{where}: 'datatype' is missing")
    if datatype not in DATATYPES:
        reason = (
            "datatype BF16 is not supported (numpy has no bfloat16); send FP32"
            if datatype == "BF16"
            else f"'{datatype[:40]}' is not a datatype"
        )
        raise InvalidInput(f"{where}: {reason}; expected one of {', '.join(DATATYPES)}")
    if expected is not None and (datatype, expected) not in SAFE_CASTS:
        raise InvalidInput(f"{where}: datatype {datatype} given, model expects {expected}")
    return datatype


def _shape(value: Any, where: str) -> list[int]:
    shape = list(value)
    if len(shape) == 1 and 0 <= shape[0] <= _MAX_ELEMENTS:  # the common case, checked cheaply
        return shape
    if len(shape) > 32:
        raise MalformedRequest(f"{where}: 'shape' has {len(shape)} dimensions; at most 32 are supported")
    if any(dim < 0 for dim in shape):
        raise MalformedRequest(f"{where}: 'shape' {shape} has a negative size; give the actual sizes")
    if math.prod(dim or 1 for dim in shape) > _MAX_ELEMENTS:
        raise MalformedRequest(f"{where}: 'shape' {shape} is too large")
    return shape


def _typed(contents: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        raise InvalidInput(f"{where}: {datatype} has no typed contents field; send it in raw_input_contents")
    given = [f.name for f, _ in contents.ListFields() if f.name != field]
    if given:
        raise InvalidInput(f"{where}: datatype {datatype} goes in contents.{field}, not contents.{given[0]}")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(
            f"{where}: shape {shape} has {count} elements but contents.{field} has {len(values)}; "
            "the product of the shape must equal the number of elements"
        )
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        return _text(list(values)).reshape(shape)
    if datatype == "BOOL":
        return np.array(values, dtype=dtype).reshape(shape)
    wide = np.array(values, dtype=np.float64 if dtype.kind == "f" else np.int64 if dtype.kind == "i" else np.uint64)
    if dtype.kind in "iu" and dtype.itemsize < wide.dtype.itemsize and count:
        low, high = integer_range(dtype)
        outside = np.flatnonzero((wide < low) | (wide > high))
        if outside.size:
            index = int(outside[0])
            raise InvalidInput(
                f"{where}: value {int(wide[index])} at element {index} is out of range for {datatype} ({low}..{high})"
            )
    return wide.astype(dtype, copy=False).reshape(shape)


def _text(elements: list[bytes]) -> np.ndarray:
    """BYTES elements as ``str`` when all are UTF-8 (as JSON and the binary extension give them), else bytes."""
    arr = np.empty(len(elements), dtype=object)
    try:
        arr[:] = [e.decode("utf-8") for e in elements]
    except UnicodeDecodeError:
        arr[:] = elements
    return arr


def encode(response: InferenceResponse, codec: V2Codec, raw: bool) -> Any:
    """The ``ModelInferResponse`` for an answer: raw contents when ``raw`` (or an output is FP16)."""
    message = proto.ModelInferResponse(model_name=response.model_name, model_version=response.model_version)
    if response.id is not None:
        message.id = response.id
    typed = [(name, _output(name, value, codec)) for name, value in response.outputs.items()]
    raw = raw or any(datatype not in CONTENTS for _, (datatype, _) in typed)
    for name, (datatype, arr) in typed:
        output = message.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            message.raw_output_contents.append(bytes(binary.encode_tensor(arr, datatype)))
        elif datatype == "BYTES":
            output.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1).tolist()
            )
        else:
            getattr(output.contents, CONTENTS[datatype]).extend(arr.reshape(-1).tolist())
    return message


def _output(name: str, value: np.ndarray, codec: V2Codec) -> tuple[str, np.ndarray]:
    datatype = codec.output_types.get(name) or datatype_of(value.dtype)
    if datatype == "BYTES" or value.dtype == DATATYPES[datatype]:
        return datatype, value
    try:
        return datatype, value.astype(DATATYPES[datatype])
    except (TypeError, ValueError):
        raise InferenceError(f"model output '{name}' cannot be represented as {datatype}") from None
