"""A V2 (Open Inference Protocol) JSON request body as a gRPC client sends it, and a gRPC answer read back.

``model_infer_request`` builds the ``inference.ModelInferRequest`` (Triton's generated messages, as
tritonclient and stubs generated from the specification's .proto send it) that carries the same tensors as a
REST body: each input's ``data`` flattened row-major into the typed ``contents`` field of its datatype, or
encoded once more as ``raw_input_contents`` (little-endian, BYTES as 4-byte-length-prefixed elements);
request and input ``parameters`` as ``InferParameter`` maps; the requested ``outputs``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

#: V2 datatype -> the InferTensorContents field a typed request fills (FP16 has none)
CONTENTS = {
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
#: V2 datatype -> numpy dtype of its raw (little-endian) encoding
DTYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def flat(data: Any) -> list[Any]:
    """A tensor's ``data`` as JSON gives it (flat or nested lists) in row-major order."""
    if isinstance(data, list):
        return [v for item in data for v in flat(item)]
    return [data]


def _parameter(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def _raw(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()


def model_infer_request(body: dict[str, Any], model: str, *, raw: bool) -> Any:
    """``body`` (a V2 JSON request) as the ``ModelInferRequest`` a gRPC client sends for it."""
    request = service_pb2.ModelInferRequest(model_name=model, id=str(body.get("id", "")))
    for key, value in (body.get("parameters") or {}).items():
        _parameter(request.parameters[key], value)
    for tensor in body["inputs"]:
        item = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        for key, value in (tensor.get("parameters") or {}).items():
            _parameter(item.parameters[key], value)
        values = flat(tensor["data"])
        if raw:
            request.raw_input_contents.append(_raw(values, tensor["datatype"]))
        elif tensor["datatype"] == "BYTES":
            item.contents.bytes_contents.extend(v.encode() if isinstance(v, str) else v for v in values)
        else:
            getattr(item.contents, CONTENTS[tensor["datatype"]]).extend(values)
    for output in body.get("outputs") or []:
        request.outputs.add(name=output["name"])
    return request


def outputs(response: Any) -> dict[str, np.ndarray]:
    """A ``ModelInferResponse``'s outputs by name, raw or typed, shaped; BYTES as Python ``bytes`` objects."""
    out: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        shape = list(tensor.shape)
        if response.raw_output_contents:
            data = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                items, at = [], 0
                while at < len(data):
                    (length,) = struct.unpack_from("<I", data, at)
                    items.append(data[at + 4 : at + 4 + length])
                    at += 4 + length
                array = np.array(items, dtype=object)
            else:
                array = np.frombuffer(data, dtype=DTYPES[tensor.datatype])
        else:
            array = np.array(list(getattr(tensor.contents, CONTENTS[tensor.datatype])))
        out[tensor.name] = array.reshape(shape)
    return out
