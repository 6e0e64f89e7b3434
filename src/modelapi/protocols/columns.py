"""The fast path from JSON row values to one numpy column, for values that need no per-element messages.

``records`` and ``v1`` check every value in Python so that a mistake is reported with its record and field;
that costs microseconds per element. Most requests have no mistake: when every element is already of a type
the datatype takes and the rows have the declared shape, one ``np.array`` call builds the column. Anything
else returns ``None`` and the caller takes its checked path, which finds and names the problem.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..datatypes import json_type
from ..signature import TensorSpec

_FLOAT64 = np.dtype(np.float64)
#: JSON element types each kind takes without a per-element look (bool is not a number here)
_TAKES: dict[str, frozenset[type]] = {
    "number": frozenset({float, int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
}


def fast_column(spec: TensorSpec, values: list[Any]) -> np.ndarray | None:
    """``values`` (one per row) as an array of the first axis rows, or ``None`` when a checked look is needed."""
    kind = json_type(spec.datatype)
    row_shape = spec.row_shape
    if len(row_shape) > 1:
        return None
    if row_shape:
        if not all(type(v) is list for v in values):
            return None
        elements: Any = itertools.chain.from_iterable(values)
    else:
        elements = values
    if not set(map(type, elements)) <= _TAKES[kind]:
        return None
    try:
        if kind == "string":
            if row_shape:
                return None  # object arrays of lists are built by the checked path
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr
        arr = np.array(values, dtype=_FLOAT64 if kind == "number" else spec.dtype)
    except (ValueError, OverflowError, TypeError):  # ragged rows, an int beyond the type
        return None
    width = spec.shape[-1] if len(spec.shape) == 2 else -1
    if arr.ndim != len(spec.shape) or (width >= 0 and arr.shape[-1] != width):
        return None
    return arr
