"""An infer request's JSON document with its floating-point tensor data read straight into numpy (simdjson).

orjson makes a Python float for every element of a tensor's ``data`` (24 bytes, and 8 more in the list), only for
``v2_json.decode_tensor`` to copy them into an array. simdjson parses onto a tape its parser keeps and reuses,
and hands an array of numbers out as one buffer of doubles: less CPU, and less memory written, which counts most
when many connections have left the cache cold (docs/overload-log.md).

``loads`` gives the document orjson would give, except that the ``data`` of each input declared FP64 or FP32 is
a float64 array holding exactly the doubles orjson's numbers become (JSON numbers are parsed correctly rounded by
both; an integer becomes the nearest double, as numpy makes it from a Python int). It gives ``None``, and the
caller parses with orjson, judging and naming any fault as before, unless all of this holds:

- the body starts with ``{`` (simdjson skips a byte-order mark that orjson refuses), names ``"FP64"`` or
  ``"FP32"`` (else it is not parsed twice), and simdjson parses it;
- every input is an object whose ``datatype`` is FP64 or FP32 and whose ``data`` is an array of numbers only
  (no null, boolean or string: ``as_buffer`` refuses those), so ``decode_tensor`` would build it from numbers;
- no object gives a key twice (simdjson would look up the first; orjson keeps the last);
- the data is flat. ``as_buffer`` flattens nested arrays without checking them against the shape, so the caller
  counts the body's ``[`` and ``{`` bytes (``openings``: ``security/json_limits.py`` does, as it checks the
  limits): each opens an array or object, or sits in a string, and when there are no more of them than the
  arrays and objects this walk accounts for, no tensor's data holds a nested array.

The parser belongs to its thread, and holds one document at a time: nothing of it outlives ``loads``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import simdjson

_FP64 = np.dtype(np.float64)
#: the declared datatypes whose data is read as doubles (FP32 is narrowed, and checked, by ``decode_tensor``)
_DOUBLES = frozenset(("FP64", "FP32"))
_local = threading.local()


def _parser() -> simdjson.Parser:
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def loads(body: bytes, openings: int) -> dict[str, Any] | None:
    """The request document with each input's data as a float64 array, or ``None`` (parse it with orjson).
    ``openings``: the ``[`` and ``{`` bytes in ``body``."""
    if body[:1] != b"{" or (b'"FP64"' not in body and b'"FP32"' not in body):
        return None
    try:
        doc = _parser().parse(body)
    except Exception:  # any fault, and simdjson's limits (a 64-bit integer's): orjson judges and names it
        return None
    try:
        return _document(doc, openings)
    except Exception:
        return None
    finally:
        del doc  # the parser's next document needs none of this one left


def _document(doc: Any, openings: int) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    inputs = None
    for key, value in _members(doc):
        if key == "inputs":
            inputs = value
            out[key] = None  # its place among the keys, as orjson keeps them
        else:
            out[key] = _python(value)
    if type(inputs) is not simdjson.Array:
        return None
    containers = 2 + _containers(out)  # the document, its inputs array and those in the rest of it
    items: list[dict[str, Any]] = []
    for item in inputs:
        if type(item) is not simdjson.Object:
            return None
        entry: dict[str, Any] = {}
        data = None
        for key, value in _members(item):
            if key == "data":
                data = value
                entry[key] = None
            else:
                entry[key] = _python(value)
        if entry.get("datatype") not in _DOUBLES or type(data) is not simdjson.Array:
            return None
        entry["data"] = np.frombuffer(data.as_buffer(of_type="d"), dtype=_FP64)
        containers += 2 + _containers(entry)  # the input, its data, and the rest of it
        items.append(entry)
    if openings > containers:  # a nested array in some data (or a bracket in a string): orjson's document
        return None
    out["inputs"] = items
    return out


def _members(obj: Any) -> list[tuple[str, Any]]:
    """An object's members, values as simdjson's proxies (``items()`` converts them all). A key given twice
    raises: simdjson looks up the first, orjson keeps the last."""
    keys = list(obj.keys())
    if len(set(keys)) != len(keys):
        raise ValueError("a duplicate key")
    return [(key, obj[key]) for key in keys]


def _python(value: Any) -> Any:
    kind = type(value)
    if kind is simdjson.Object:
        return value.as_dict()
    if kind is simdjson.Array:
        return value.as_list()
    return value


def _containers(value: dict[str, Any]) -> int:
    """The arrays and objects in a converted object's values (data taken as numpy is counted by the caller)."""
    count = 0
    stack = list(value.values())
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list:
            count += 1
            stack.extend(item)
        elif kind is dict:
            count += 1
            stack.extend(item.values())
    return count
