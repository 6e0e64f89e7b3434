"""Rules every codec shares, written once: so that a value is described, a row limit worded, a NaN written,
"the prediction" chosen and an integer range checked the same way on every protocol.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from itertools import chain
from typing import Any

import numpy as np

from .. import matching
from ..errors import PayloadTooLarge
from ..signature import Signature


@functools.cache  # the installed version cannot change while the process runs; GET / asks on every call
def package_version() -> str:
    """The installed modelapi's version (answers, the OpenAPI document, V2 server metadata)."""
    try:
        return importlib.metadata.version("modelapi")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def describe(value: Any, *, definite: bool = False) -> str:
    """A JSON value in words: ``string 'abc'``, ``number 1.5``, ``boolean true``, ``null``, ``an array of length
    2``, ``an object``. With ``definite`` a string, number or boolean reads ``the string 'abc'`` and so on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        words = f"boolean {'true' if value else 'false'}"
    elif isinstance(value, str):
        words = f"string {value[:40]!r}"
    elif isinstance(value, int | float):
        words = f"number {value!r}"[:50]
    elif isinstance(value, list):
        return f"an array of length {len(value)}"
    elif isinstance(value, dict):
        return "an object"
    else:
        return type(value).__name__
    return f"the {words}" if definite else words


def check_row_limit(n: int, max_rows: int | None, what: str = "rows") -> None:
    """413 when a request carries more than ``max_rows`` rows (``what``: the protocol's word for them)."""
    if max_rows is not None and n > max_rows:
        raise PayloadTooLarge(f"the request has {n} {what}; the limit is {max_rows} rows per request")


def integer_range(dtype: np.dtype[Any]) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def primary_output(signature: Signature) -> str | None:
    """The output that answers "what is the prediction": ``prediction``, else ``label``, else the first."""
    return matching.primary_output(signature)


#: up to this many values ``to_plain`` checks a float array's finiteness on its list
_LISTED = 64


def to_plain(arr: np.ndarray) -> Any:
    """An array -> plain Python (lists, str, int, float, bool, None); NaN/Infinity -> None (JSON has no form
    for them, so every answer stays valid JSON), bytes -> str."""
    kind = arr.dtype.kind
    if kind == "f":
        ndim = arr.ndim
        if (ndim == 1 or ndim == 2) and arr.size <= _LISTED:
            # a few values (a row's probabilities): the list is the answer when they are finite, and then so is
            # their sum, added up in C (a NaN or an infinity makes it NaN or infinite); that costs less than
            # numpy's isfinite and all (two calls of a few microseconds each). A sum that overflowed looks below
            values = arr.tolist()
            if math.isfinite(sum(values) if ndim == 1 else sum(chain.from_iterable(values))):
                return values
        finite = np.isfinite(arr)
        if not finite.all():
            obj = arr.astype(object)
            obj[~finite] = None
            return obj.tolist()
        return arr.tolist()
    if kind in "OS":
        return _plain_value(arr.tolist())
    return arr.tolist()


def _plain_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return to_plain(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
