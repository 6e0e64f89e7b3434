"""Tensor ``data`` in Open Inference Protocol JSON <-> numpy arrays.

Requests may send ``data`` flat (row-major, ``product(shape)`` elements) or nested exactly to ``shape``. The
declared datatype must describe every element: BOOL takes ``true``/``false``; integer types take integers
(``2.0`` counts as an integer, ``2.5`` does not) within the type's range; FP types take numbers within range
and ``null`` (read as NaN, the way answers write NaN); BYTES takes strings.

Answers are always flat. NaN and Infinity in FP outputs are written as ``null`` (JSON has no form for them).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ...datatypes import DATATYPES
from ...errors import InvalidInput, MalformedRequest
from ..columns import numbers
from ..common import describe, integer_range
from .document import Numbers

#: the Python types orjson gives that each datatype accepts (bool is not an int here)
_ALLOWED: dict[str, set[type]] = {name: {int, float} for name in DATATYPES}
_ALLOWED.update({name: {int, float, type(None)} for name, dt in DATATYPES.items() if dt.kind == "f"})
_ALLOWED.update(BOOL={bool}, BYTES={str})
_NEEDS = {"BOOL": "true/false", "BYTES": "strings"}
_FP64 = np.dtype(np.float64)
#: the element types a kind of array that ``numbers`` gives may hold (float64: floats, ints, or both)
_DISCOVERED: dict[str, set[type]] = {"f": {int, float}, "i": {int}, "b": {bool}}


def decode_tensor(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """``data`` of one input as an array of ``datatype`` with ``shape``; 400 naming ``where`` otherwise."""
    if type(data) is Numbers:  # numbers ``document.loads`` read as one buffer
        return _from_buffer(data.array, datatype, shape, where)
    if not isinstance(data, list):
        raise MalformedRequest(f"{where}: 'data' must be an array (flat, or nested to the shape)")
    count = math.prod(shape)
    flat = _flatten(data, shape, count, where) if data and type(data[0]) is list else data
    if len(flat) != count:
        raise InvalidInput(
            f"{where}: shape {shape} has {count} elements but 'data' has {len(flat)}; "
            "the product of the shape must equal the number of elements"
        )
    dtype = DATATYPES[datatype]
    found = numbers(flat) if datatype != "BYTES" else None
    if found is not None and found.ndim == 1:  # numpy's type discovery vouches for every element's type
        if found.dtype is _FP64 and dtype is _FP64:  # the common case, at once (numpy's own float64 descriptor)
            return found.reshape(shape)
        if dtype == _FP64 and found.dtype.kind in "fi":  # no second pass over the elements
            return (found if found.dtype == _FP64 else found.astype(_FP64)).reshape(shape)
        types = _DISCOVERED[found.dtype.kind]
    else:
        types = set(map(type, flat))
    if not types <= _ALLOWED[datatype]:
        _reject_type(flat, datatype, shape, where)
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = flat
    elif datatype == "BOOL":
        arr = np.array(flat, dtype=dtype)
    elif dtype == _FP64 and type(None) not in types:
        arr = _doubles(flat, datatype, where)
    elif dtype.kind == "f":
        arr = _floats(flat, dtype, datatype, where)
    else:
        arr = _integers(flat, dtype, datatype, where, float in types)
    return arr.reshape(shape)


def _from_buffer(data: np.ndarray, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """Numbers ``document.loads`` read as one buffer (float64 for FP32 and FP64, int64 or uint64 for an integer
    datatype), checked as a list of them is: the count against the shape, each value against the datatype's
    range."""
    count = math.prod(shape)
    if data.size != count:
        raise InvalidInput(
            f"{where}: shape {shape} has {count} elements but 'data' has {data.size}; "
            "the product of the shape must equal the number of elements"
        )
    dtype = DATATYPES[datatype]
    if data.dtype == dtype:
        return data.reshape(shape)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            arr = data.astype(dtype)
        finite = np.isfinite(arr)
        if not finite.all():  # the doubles are finite: this one overflowed the narrower type
            index = int(np.flatnonzero(~finite)[0])
            raise InvalidInput(f"{where}: value {data[index]} at element {index} is out of range for {datatype}")
        return arr.reshape(shape)
    low, high = integer_range(dtype)
    outside = (data < low) | (data > high)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise InvalidInput(
            f"{where}: value {data[index]} at element {index} is out of range for {datatype} ({low}..{high})"
        )
    return data.astype(dtype).reshape(shape)


def _flatten(data: list[Any], shape: list[int], count: int, where: str) -> list[Any]:
    """Nested data checked against ``shape`` level by level, then flattened row-major."""
    mismatch = InvalidInput(
        f"{where}: nested 'data' does not match shape {shape}; nest it exactly to the shape, "
        f"or send it flat with {count} elements"
    )
    if not shape or len(data) != shape[0]:
        raise mismatch
    level = data
    for dim in shape[1:]:
        if not all(type(item) is list and len(item) == dim for item in level):
            raise mismatch
        level = list(itertools.chain.from_iterable(level))
    return level


def _reject_type(flat: list[Any], datatype: str, shape: list[int], where: str) -> None:
    allowed = _ALLOWED[datatype]
    index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in allowed)
    needs = _NEEDS.get(datatype, "integers" if DATATYPES[datatype].kind in "iu" else "numbers or null")
    if isinstance(value, list):
        raise InvalidInput(
            f"{where}: element {index} is an array; send 'data' flat, or nested exactly to shape {shape}"
        )
    raise InvalidInput(
        f"{where}: datatype {datatype} needs {needs}, got {describe(value, definite=True)} at element {index}"
    )


def _doubles(flat: list[Any], datatype: str, where: str) -> np.ndarray:
    """FP64 without nulls: JSON numbers are finite doubles already, so only a huge integer can fail."""
    try:
        return np.array(flat, dtype=_FP64)
    except OverflowError:
        return _floats(flat, _FP64, datatype, where)


def _floats(flat: list[Any], dtype: np.dtype[Any], datatype: str, where: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):
            arr = np.array(flat, dtype=dtype)
    except OverflowError:  # a Python int beyond any float
        index, value = next(((i, v) for i, v in enumerate(flat) if v is not None and not _fits(v, dtype)), (0, "?"))
        raise InvalidInput(f"{where}: value {value} at element {index} is out of range for {datatype}") from None
    finite = np.isfinite(arr)
    if not finite.all():
        # null (read as NaN) is the only non-finite value JSON can carry; anything else overflowed
        for index in np.flatnonzero(~finite).tolist():
            if flat[index] is not None:
                raise InvalidInput(f"{where}: value {flat[index]} at element {index} is out of range for {datatype}")
    return arr


def _fits(value: int | float, dtype: np.dtype[Any]) -> bool:
    try:
        number = float(value)
    except OverflowError:
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.array(number, dtype=dtype)))


def _integers(flat: list[Any], dtype: np.dtype[Any], datatype: str, where: str, has_floats: bool) -> np.ndarray:
    if has_floats:
        for index, value in enumerate(flat):
            if type(value) is float and not value.is_integer():
                raise InvalidInput(f"{where}: datatype {datatype} needs integers, got {value} at element {index}")
        flat = [int(v) for v in flat]
    try:
        return np.array(flat, dtype=dtype)
    except OverflowError:
        low, high = integer_range(dtype)
        index, value = next((i, v) for i, v in enumerate(flat) if not low <= v <= high)
        raise InvalidInput(
            f"{where}: value {value} at element {index} is out of range for {datatype} ({low}..{high})"
        ) from None


def encode_tensor(arr: np.ndarray, datatype: str) -> Any:
    """Flat, row-major data for an output: a numpy array orjson writes natively, or a list of str for BYTES."""
    if datatype == "BYTES":
        return [
            v if isinstance(v, str) else v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
            for v in arr.reshape(-1).tolist()
        ]
    if type(arr) is not np.ndarray:  # a subclass (np.matrix stays 2-D through ravel): a plain array first
        arr = np.asarray(arr)
    return arr.ravel()  # a view of a C-contiguous array, else a C-ordered copy: what orjson writes
