"""Open Inference Protocol datatypes (``FP64``, ``INT64``, ``BYTES``...) <-> numpy dtypes and JSON types."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Open Inference Protocol datatype -> numpy dtype. BYTES holds str or bytes in an object array.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype[Any] | type | str) -> str:
    """The Open Inference Protocol datatype for a numpy dtype (strings and objects are ``BYTES``)."""
    dt = np.dtype(dtype)
    if dt.kind in "OUS":
        return "BYTES"
    try:
        return _BY_DTYPE[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no Open Inference Protocol datatype") from None


def json_type(datatype: str) -> str:
    """The JSON Schema type for one element of a datatype."""
    if datatype == "BOOL":
        return "boolean"
    if datatype == "BYTES":
        return "string"
    if datatype.startswith(("INT", "UINT")):
        return "integer"
    return "number"
