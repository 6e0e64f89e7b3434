"""Open Inference Protocol (V2) tensors for ``infer``: numpy arrays -> a request body, an answer -> arrays.

Numeric inputs of ``BINARY_MIN_BYTES`` or more go in the binary tensor data extension (raw little-endian
bytes after a JSON header, as Triton and this server speak it) unless ``binary`` says otherwise: a float
written as JSON text takes about 20 bytes and must be parsed, in binary it takes 8 and is read without
copying. Small inputs stay JSON, which is easier to read in a log. When any input goes binary, the answer is
asked for in binary too. The byte layout is the server's own (``protocols/v2/binary.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from ..datatypes import DATATYPES, datatype_of
from ..errors import ModelAPIError
from ..protocols.v2.binary import HEADER_LENGTH, decode_tensor, encode_tensor
from .errors import ClientError

__all__ = ["BINARY_MIN_BYTES", "HEADER_LENGTH", "as_array", "decode_answer", "encode_request"]

#: a numeric input at least this large (in bytes) is sent in binary when ``binary`` is None (auto)
BINARY_MIN_BYTES = 16 * 1024


def as_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    try:
        datatype_of(arr.dtype)
    except ValueError:
        raise TypeError(f"input '{name}': numpy dtype {arr.dtype} has no Open Inference Protocol datatype") from None
    return arr


def encode_request(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, binary: bool | None
) -> tuple[bytes, dict[str, str]]:
    """The infer body and its headers (content type, and the JSON header's length when binary follows)."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, arr in inputs.items():
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        numeric = datatype != "BYTES"
        if binary or (binary is None and numeric and arr.nbytes >= BINARY_MIN_BYTES):
            raw = encode_tensor(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(arr, datatype)
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if chunks:
        doc["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        doc["outputs"] = [{"name": name} for name in outputs]
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    body = b"".join([header, *(bytes(c) for c in chunks)])
    return body, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _json_data(arr: np.ndarray, datatype: str) -> list[Any]:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    values: list[Any] = flat.tolist()
    return values


def decode_answer(content: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """An infer answer -> output name -> array (writable; BYTES as an object array of str)."""
    try:
        if header_length is None:
            doc = orjson.loads(content)
            buffer = memoryview(b"")
        else:
            size = int(header_length)
            doc = orjson.loads(content[:size])
            buffer = memoryview(content)[size:]
        outputs: dict[str, np.ndarray] = {}
        offset = 0
        for item in doc["outputs"]:
            name, datatype, shape = item["name"], item["datatype"], [int(d) for d in item["shape"]]
            binary_size = (item.get("parameters") or {}).get("binary_data_size")
            if binary_size is None:
                outputs[name] = _from_json(item["data"], datatype, shape)
            else:
                view = buffer[offset : offset + int(binary_size)]
                offset += int(binary_size)
                outputs[name] = decode_tensor(view, datatype, shape, f"output '{name}'").copy()
        return outputs
    except (ModelAPIError, KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise ClientError(f"the server's infer answer could not be read: {exc}") from None


def _from_json(data: Any, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        arr = np.empty(int(np.prod(shape)), dtype=object)
        arr[:] = np.asarray(data, dtype=object).reshape(-1)
        return arr.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind == "f":  # NaN and infinities come as null
        return np.asarray(np.asarray(data, dtype=np.float64), dtype=dtype).reshape(shape)
    return np.asarray(data, dtype=dtype).reshape(shape)
