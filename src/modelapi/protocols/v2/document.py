"""An infer request's JSON document with its numeric tensor data read straight into numpy (simdjson).

orjson makes a Python object for every element of a tensor's ``data`` (a float is 24 bytes, and 8 more in the
list), only for ``v2_json.decode_tensor`` to copy them into an array. simdjson parses onto a tape its parser keeps
and reuses, and hands an array of numbers out as one buffer: less CPU, and less memory written, which counts most
when many connections have left the cache cold (docs/overload-log.md).

``loads`` gives the document orjson would give, except that the ``data`` of each input is a flat numpy array of
the numbers orjson's would be: float64 for the FP types (JSON numbers are parsed correctly rounded by both; an
integer becomes the nearest double, as numpy makes it from a Python int), int64 for the INT types and UINT8 to
UINT32, uint64 for UINT64. ``decode_tensor`` then checks it against the datatype and shape as it checks a list.
It gives ``None``, and the caller parses with orjson, judging and naming any fault as before, unless all of this
holds:

- the body is ``bytes`` starting with ``{`` (simdjson skips a byte-order mark that orjson refuses), and simdjson
  parses it;
- no object gives a key twice (simdjson looks up the first; orjson keeps the last), nor a key holding ``\\u0000``
  (simdjson looks a key up as a C string, cut at the NUL);
- every input is an object with a numeric datatype (not BOOL, BYTES or BF16), a shape of sizes, and ``data``
  holding numbers only, each of the buffer's type: no null, boolean or string, no float for an integer type
  and no integer past 64 bits (``as_buffer`` refuses them);
- the data is flat, or nested exactly to the shape, level by level as ``decode_tensor`` checks it. ``as_buffer``
  flattens whatever nesting it finds, so the caller counts the body's ``[`` and ``{`` bytes (``openings``:
  ``security/json_limits.py`` does, as it checks the limits): each opens an array or object, or sits in a string,
  and when there are no more of them than the arrays and objects this walk has accounted for, no data holds an
  array the walk has not checked.

A body that fails these after simdjson has parsed it is parsed twice (a null in the data, an input of BOOL or
BYTES, a bracket in a string): about half again orjson's parse. A body over ``_KEPT_BYTES`` has a parser of its
own, freed afterwards: the thread's parser keeps the capacity of the largest document it has parsed, and holds
one document at a time; nothing of it outlives ``loads``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TypeGuard

import numpy as np
import simdjson

log = logging.getLogger("modelapi")

_FP, _INT, _UINT = "d", "i", "u"
#: what ``as_buffer`` reads each datatype's numbers as (``of_type``)
_BUFFERS = {
    **dict.fromkeys(("FP16", "FP32", "FP64"), _FP),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"), _INT),
    "UINT64": _UINT,
}
_DTYPES = {_FP: np.dtype(np.float64), _INT: np.dtype(np.int64), _UINT: np.dtype(np.uint64)}
#: the array ``loads`` gives for each datatype's data (``v2_json.decode_tensor`` takes only these)
BUFFER_DTYPES = {datatype: _DTYPES[kind] for datatype, kind in _BUFFERS.items()}
#: bodies larger than this get a parser of their own: the thread's keeps its tape's capacity for good
_KEPT_BYTES = 1 << 20
_local = threading.local()
_failed = False  # an unexpected error in the walk, logged once


def _parser() -> simdjson.Parser:
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def loads(body: bytes, openings: int) -> dict[str, Any] | None:
    """The request document with each input's data as a flat numpy array, or ``None`` (parse it with orjson).
    ``openings``: the ``[`` and ``{`` bytes in ``body``."""
    if type(body) is not bytes or body[:1] != b"{":
        return None
    own = len(body) > _KEPT_BYTES
    parser = simdjson.Parser() if own else _parser()
    try:
        doc = parser.parse(body)
    except RuntimeError as exc:
        if "re-use" in str(exc):  # a document of this parser still alive: never expected, but never stuck on it
            _local.parser = None
            _unexpected(exc)
        return None  # simdjson's limits (an integer past 64 bits): orjson judges
    except Exception:  # any fault: orjson judges and names it
        return None
    try:
        return _document(doc, openings)
    except (TypeError, ValueError):  # data that is not numbers of the buffer's type (as_buffer), a key twice
        return None
    except Exception as exc:
        _unexpected(exc)
        return None
    finally:
        del doc  # the parser's next document needs none of this one left


def _unexpected(exc: Exception) -> None:
    global _failed
    if not _failed:
        _failed = True
        log.error("V2 request documents are parsed by orjson after an unexpected error: %r", exc, exc_info=exc)


def _document(doc: Any, openings: int) -> dict[str, Any] | None:
    if type(doc) is not simdjson.Object:
        return None
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
    taken: list[tuple[dict[str, Any], Any, str]] = []
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
        datatype = entry.get("datatype")
        kind = _BUFFERS.get(datatype) if type(datatype) is str else None
        shape = entry.get("shape")
        if kind is None or type(data) is not simdjson.Array or not _sizes(shape):
            return None
        nested = _nested(data, shape)
        if nested is None:
            return None
        containers += 2 + nested + _containers(entry)  # the input, its data's arrays, and the rest of it
        items.append(entry)
        taken.append((entry, data, kind))
    if openings > containers:  # an array in some data the walk did not check (or a bracket in a string)
        return None
    for entry, data, kind in taken:
        entry["data"] = np.frombuffer(data.as_buffer(of_type=kind), dtype=_DTYPES[kind])
    out["inputs"] = items
    return out


def _members(obj: Any) -> list[tuple[str, Any]]:
    """An object's members, values as simdjson's proxies (``items()`` converts them all). A key given twice, or
    one holding a NUL (looked up cut at it), raises."""
    keys = list(obj.keys())
    if len(set(keys)) != len(keys) or any("\x00" in key for key in keys):
        raise ValueError("a key that simdjson cannot look up as orjson reads it")
    return [(key, obj[key]) for key in keys]


def _python(value: Any) -> Any:
    kind = type(value)
    if kind is simdjson.Object:
        return value.as_dict()
    if kind is simdjson.Array:
        return value.as_list()
    return value


def _sizes(shape: Any) -> TypeGuard[list[int]]:
    return type(shape) is list and all(type(dim) is int and dim >= 0 for dim in shape)


def _nested(data: Any, shape: list[int]) -> int | None:
    """The arrays nested in ``data`` (0 when it is flat), each level checked against ``shape`` as
    ``decode_tensor`` checks it; ``None`` where it would refuse the nesting. What the last level holds is left to
    ``as_buffer`` (numbers) and the caller's count (no array)."""
    if len(data) == 0 or type(data[0]) is not simdjson.Array:
        return 0
    if len(shape) < 2 or len(data) != shape[0]:
        return None
    level = [data]
    count = 0
    for dim in shape[1:]:
        below = []
        for array in level:
            for item in array:
                if type(item) is not simdjson.Array or len(item) != dim:
                    return None
                below.append(item)
        count += len(below)
        level = below
    return count


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
