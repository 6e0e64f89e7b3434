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

The commonest column of all, many floats (``floats``: a flat list, or rows of one length), costs less still:
``struct`` writes them into the array in C at about a third of numpy's discovery per element, and its one blind
spot, an integer or a boolean taken as a number, can only hold an integral value, so the integral elements, and
only those, are looked at. Anything else is left to ``numbers``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np

from ..datatypes import DATATYPES, json_type
from ..signature import TensorSpec

_FLOAT64 = np.dtype(np.float64)
_INT64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)
#: ``struct.pack_into``, typed to take an array (numpy's buffer) as it does
_pack_into: Callable[..., None] = struct.pack_into
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
    if dtype is not _FLOAT64 and dtype is not _INT64:  # (numpy gives these very objects: no comparison needed)
        if dtype == _BOOL:  # numpy makes a bool array only of booleans
            return arr
        if dtype != _FLOAT64 and dtype != _INT64:  # a string, a null, an object: the checked path names it
            return None
    ndim = arr.ndim
    if arr.size <= _SCANNED and 1 <= ndim <= 2:
        # a few elements (a row or two): their types read in one loop in C cost less than the comparisons below
        # (three numpy calls and flatnonzero, about 4x as much for a row of 20)
        flat = values if ndim == 1 else values[0] if len(values) == 1 else chain.from_iterable(values)
        return None if bool in map(type, flat) else arr
    # true exactly at the 0s and 1s, where a boolean may have become a number (two numpy calls, not three)
    suspect = arr == arr.astype(_BOOL)
    if np.count_nonzero(suspect):  # look at those elements themselves
        for index in zip(*np.unravel_index(np.flatnonzero(suspect), arr.shape), strict=True):
            value: Any = values
            for i in index:
                value = value[i]
            if type(value) is bool:
                return None
    return arr


def floats(values: list[Any], width: int | None = None) -> np.ndarray | None:
    """``values`` as a float64 array when every element is a float (Python's own type, as orjson gives),
    otherwise ``None``; ``width``: ``values`` are rows, each a list of ``width`` floats (2-D answer). What
    ``numbers`` would give for them, only cheaper, for many elements (a few cost more this way)."""
    rows = len(values)
    shape: tuple[int, ...]
    if rows * (width or 1) <= _SCANNED:  # a few elements (or a width of -1): ``numbers`` costs less
        return None
    try:
        if width is None:
            flat, shape = values, (rows,)
        else:
            if width <= 0 or set(map(len, values)) != {width}:
                return None
            flat = []
            for row in values:  # a row that is no list fails here, or puts a str (a key, a char) into flat
                flat += row
            shape = (rows, width)
        count = len(flat)
        if type(flat[0]) is not float:  # (a column of integers: no use trying)
            return None
        arr = np.empty(shape, dtype=_FLOAT64)
        # takes floats, integers and booleans (as numbers); refuses anything else
        _pack_into(f"{count}d", arr, 0, *flat)
    except (struct.error, TypeError, OverflowError):
        return None
    integral = arr.reshape(count) if width is not None else arr
    suspect = np.trunc(integral) == integral  # every integer or boolean is among these; few floats are
    if np.count_nonzero(suspect):
        for i in np.flatnonzero(suspect).tolist():
            if type(flat[i]) is not float:
                return None
    return arr


#: each datatype's JSON type (``datatypes.json_type``), looked up once per column
_JSON_TYPES = {name: json_type(name) for name in DATATYPES}


def fast_column(spec: TensorSpec, values: list[Any]) -> np.ndarray | None:
    """``values`` (one per row) as an array of the first axis rows, or ``None`` when a checked look is needed."""
    shape = spec.shape
    if len(shape) > 2:  # rows nested deeper take the checked path
        return None
    kind = _JSON_TYPES[spec.datatype]
    if kind == "string":
        if len(shape) > 1 or not all(type(v) is str for v in values):
            return None  # object arrays of lists are built by the checked path
        strings = np.empty(len(values), dtype=object)
        strings[:] = values
        return strings
    if len(values) > 1 and kind == "number":  # (one row: a few elements, for ``numbers``)
        arr = floats(values, shape[1] if len(shape) == 2 else None)
        if arr is None:
            arr = numbers(values)
    else:
        arr = numbers(values)
    if arr is None:
        return None
    dtype = arr.dtype
    if dtype is _FLOAT64 and kind == "number":  # the common case: the checks below, answered at once
        pass
    elif kind == "boolean":
        if dtype != _BOOL:
            return None
    elif dtype == _BOOL:
        return None
    elif kind == "number":
        if dtype != _FLOAT64:
            arr = arr.astype(_FLOAT64)  # the signature casts to the declared width
    elif dtype != _INT64:  # an integer input given a float (2.0 is taken, 2.5 is not): the checked path
        return None
    elif spec.dtype != _INT64:
        try:  # numpy refuses an integer out of the narrower type's range here (astype would wrap it)
            arr = np.array(values, dtype=spec.dtype)
        except OverflowError:
            return None
    if len(shape) == 2:
        if arr.ndim != 2 or (shape[1] >= 0 and arr.shape[1] != shape[1]):
            return None
    elif arr.ndim != 1:
        return None
    return arr
