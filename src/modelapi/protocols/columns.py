"""The fast path from JSON values to numpy arrays, for values that need no per-element messages.

``records`` and ``v1`` check every value in Python so that a mistake is reported with its record and field;
that costs microseconds per element. Most requests have no mistake: when every element is already of a type
the datatype takes and the rows have the declared shape, one ``np.array`` call builds the column. Anything
else returns ``None`` and the caller takes its checked path, which finds and names the problem.

Numbers are not looked at one by one either (``numbers``): numpy's own type discovery, in C, tells a list of
numbers (float64 or int64) or of booleans (bool) from anything else (a string, a null, a ragged nesting: another
dtype, or an error). Its one blind spot is a boolean among numbers, which it takes as 0 or 1; so the elements
that are exactly 0 or 1, and only those, are looked at in Python (for a few elements, a row or two, every
element's type is read instead, in one loop in C: cheaper than the comparisons that find the 0s and 1s).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from ..datatypes import json_type
from ..signature import TensorSpec

_FLOAT64 = np.dtype(np.float64)
_INT64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)
#: up to this many elements ``numbers`` looks at every element's type instead of numpy's 0 and 1
_SCANNED = 32


def numbers(values: list[Any]) -> np.ndarray | None:
    """``values`` (nested lists allowed) as the array numpy discovers, when every element is a JSON number
    (float64, or int64 when all are integers within int64) or every one a boolean (bool); otherwise ``None``."""
    try:
        arr = np.array(values)
    except (ValueError, OverflowError, TypeError):  # ragged nesting, an integer beyond any type
        return None
    dtype = arr.dtype
    if dtype == _BOOL:  # numpy makes a bool array only of booleans
        return arr
    if dtype != _FLOAT64 and dtype != _INT64:  # a string, a null, an object: the checked path names it
        return None
    if arr.size <= _SCANNED and 1 <= arr.ndim <= 2:
        # a few elements (a row or two): their types read in one loop in C cost less than the comparisons below
        # (three numpy calls and flatnonzero, about 4x as much for a row of 20)
        return None if bool in map(type, values if arr.ndim == 1 else chain.from_iterable(values)) else arr
    suspects = np.flatnonzero((arr == 0) | (arr == 1))
    if suspects.size:  # where a boolean may have become 0 or 1: look at those elements themselves
        for index in zip(*np.unravel_index(suspects, arr.shape), strict=True):
            value: Any = values
            for i in index:
                value = value[i]
            if type(value) is bool:
                return None
    return arr


def fast_column(spec: TensorSpec, values: list[Any]) -> np.ndarray | None:
    """``values`` (one per row) as an array of the first axis rows, or ``None`` when a checked look is needed."""
    kind = json_type(spec.datatype)
    if len(spec.shape) > 2:  # rows nested deeper take the checked path
        return None
    if kind == "string":
        if spec.row_shape or not all(type(v) is str for v in values):
            return None  # object arrays of lists are built by the checked path
        strings = np.empty(len(values), dtype=object)
        strings[:] = values
        return strings
    arr = numbers(values)
    if arr is None:
        return None
    if kind == "boolean":
        if arr.dtype != _BOOL:
            return None
    elif arr.dtype == _BOOL:
        return None
    elif kind == "number":
        if arr.dtype != _FLOAT64:
            arr = arr.astype(_FLOAT64)  # the signature casts to the declared width
    elif arr.dtype != _INT64:  # an integer input given a float (2.0 is taken, 2.5 is not): the checked path
        return None
    elif spec.dtype != _INT64:
        try:  # numpy refuses an integer out of the narrower type's range here (astype would wrap it)
            arr = np.array(values, dtype=spec.dtype)
        except OverflowError:
            return None
    width = spec.shape[-1] if len(spec.shape) == 2 else -1
    if arr.ndim != len(spec.shape) or (width >= 0 and arr.shape[-1] != width):
        return None
    return arr
