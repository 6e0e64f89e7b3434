"""An infer request's JSON document with its numeric tensor data read straight into numpy (simdjson).

orjson makes a Python object for every element of a tensor's ``data`` (a float is 24 bytes, and 8 more in the
list), only for ``v2_json.decode_tensor`` to copy them into an array. simdjson parses onto a tape its parser keeps
and reuses, and hands an array of numbers out as one buffer: less CPU, and less memory written, which counts most
when many connections have left the cache cold (docs/overload-log.md).

``loads`` gives the document orjson would give, except that the ``data`` of each input is ``Numbers``: a flat
numpy array of the numbers orjson's would be, float64 for FP32 and FP64 (JSON numbers are parsed correctly rounded
by both; an integer becomes the nearest double, as numpy makes it from a Python int), int64 for the INT types and
UINT8 to UINT32, uint64 for UINT64. ``decode_tensor`` checks it against the datatype and shape as it checks a
list, with the same messages. It gives ``None``, and the caller parses with orjson, judging and naming any fault
as before, unless all of this holds:

- the body is ``bytes`` starting with ``{`` (simdjson skips a byte-order mark that orjson refuses), with at least
  ``_MIN_BYTES`` bytes in all and ``_BYTES_PER_OPENING`` for each ``[`` and ``{`` in it (the parse and the walk
  cost microseconds, each of simdjson's objects some more, than a few numbers save: a body of a few rows, or of
  an input per column, goes to orjson at once), and simdjson parses it;
- neither the document nor an input gives a key twice (simdjson looks up the first; orjson keeps the last) or a
  key holding ``\\u0000`` (simdjson looks a key up as a C string, cut at the NUL); objects further in are converted
  whole, as orjson converts them;
- the document's members and each input's, its data aside, hold at most ``_REST_ITEMS`` values (parameters and
  outputs are converted as orjson converts them, and their arrays counted, in Python);
- every input is an object with the datatype FP32, FP64 or an integer one (not FP16, whose messages name the
  number as written; nor BOOL, BYTES or BF16), a shape of sizes, and ``data`` holding numbers only, each of the
  buffer's type: no null, boolean or string, no number written as a float for an integer type (``2.0``
  included, which orjson's path takes), nothing from 2**63 for an INT type
  and nothing negative for UINT64 (``as_buffer`` refuses them);
- the data is flat, or nested exactly to the shape, level by level as ``decode_tensor`` checks it. ``as_buffer``
  flattens whatever nesting it finds, so the caller counts the body's ``[`` and ``{`` bytes (``openings``:
  ``security/json_limits.py`` does, as it checks the limits): each opens an array or object, or sits in a string,
  and when there are no more of them than the arrays and objects this walk has accounted for, no data holds an
  array the walk has not checked.

Every input's datatype is looked up (in C) before anything is converted, every shape before any data, and every
input's numbers are taken in C
(``as_buffer``, which stops at a null or a string) before any nesting is walked in Python, so a body refused after
simdjson has parsed it costs its parse and little more besides orjson's (docs/overload-log.md has the figures).
A body over ``_KEPT_BYTES`` has a parser of its own, freed afterwards: a parser keeps the capacity of the largest
document it has parsed (about 16 bytes of tape a number: some 17 MiB for a 1 MiB body of short numbers), and
holds one document at a time; nothing of it outlives ``loads``.
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
    **dict.fromkeys(("FP32", "FP64"), _FP),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"), _INT),
    "UINT64": _UINT,
}
_DTYPES = {_FP: np.dtype(np.float64), _INT: np.dtype(np.int64), _UINT: np.dtype(np.uint64)}
#: bodies larger than this get a parser of their own: the thread's keeps its tape's capacity for good
_KEPT_BYTES = 1 << 20
#: the most values the document's members and each input's other than ``data`` may hold (parameters, outputs),
#: those nested included, for ``loads`` to walk them; more, and orjson reads the body
_REST_ITEMS = 256
#: fewer bytes than this for each array and object, and orjson reads the body: walking simdjson's objects costs
#: microseconds each, more than their few numbers save (one row, or an input per column)
_BYTES_PER_OPENING = 64
#: smaller bodies go to orjson: simdjson's parse and the walk cost some 7 µs whatever the size, which a few hundred
#: numbers take to save (measured: a 20-number row 8.9 µs against 4.5, ten rows about even, 32 rows 19.6 against 28.2)
_MIN_BYTES = 4096
_local = threading.local()
_failed = False  # an unexpected error in the walk, logged once


class Numbers:
    """A tensor's numbers as ``loads`` read them: one flat array (float64, int64 or uint64), for ``decode_tensor``
    to check against the datatype and shape. A type of its own, so that no other array is taken for one."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __repr__(self) -> str:
        return f"Numbers({self.array!r})"


def _parser() -> simdjson.Parser:
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def loads(body: bytes, openings: int) -> dict[str, Any] | None:
    """The request document with each input's data as a flat numpy array, or ``None`` (parse it with orjson).
    ``openings``: the ``[`` and ``{`` bytes in ``body``."""
    if type(body) is not bytes or body[:1] != b"{" or len(body) < max(_MIN_BYTES, _BYTES_PER_OPENING * openings):
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
    members = _members(doc)
    inputs = next((value for key, value in members if key == "inputs"), None)
    if type(inputs) is not simdjson.Array:
        return None
    for item in inputs:  # each input's datatype, looked up in C, before anything is converted
        datatype = item.get("datatype") if type(item) is simdjson.Object else None
        if type(datatype) is not str or datatype not in _BUFFERS:
            return None
    out: dict[str, Any] = {}
    for key, value in members:
        if key == "inputs":
            out[key] = None  # its place among the keys, as orjson keeps them
        else:
            out[key] = _python(value)
    containers = 2 + _containers(out)  # the document, its inputs array and those in the rest of it
    taken: list[tuple[dict[str, Any], Any, str, list[int]]] = []
    for item in inputs:  # every input's datatype and shape first: nothing is walked or copied for a body refused
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
        containers += 2 + _containers(entry)  # the input, its data, and the rest of it
        taken.append((entry, data, kind, shape))
    # the numbers, in C: a null, a boolean or a string ends it at once, before the nesting is walked in Python
    buffers = [data.as_buffer(of_type=kind) for _entry, data, kind, _shape in taken]
    for _entry, data, _kind, shape in taken:
        nested = _nested(data, shape)
        if nested is None:
            return None
        containers += nested
    if openings > containers:  # an array in some data the walk did not check (or a bracket in a string)
        return None
    for (entry, _data, kind, _shape), buffer in zip(taken, buffers, strict=True):
        entry["data"] = Numbers(np.frombuffer(buffer, dtype=_DTYPES[kind]))
    out["inputs"] = [entry for entry, _data, _kind, _shape in taken]
    return out


def _members(obj: Any) -> list[tuple[str, Any]]:
    """An object's members, values as simdjson's proxies (``items()`` converts them all). A key given twice, or
    one holding a NUL (looked up cut at it), raises."""
    keys = list(obj.keys())
    if len(set(keys)) != len(keys) or any("\x00" in key for key in keys):
        raise ValueError("a key that simdjson cannot look up as orjson reads it")
    return [(key, obj[key]) for key in keys]


def _python(value: Any) -> Any:
    """A member other than an input's data, as orjson would give it (a container of more than ``_REST_ITEMS``
    values raises, unconverted)."""
    kind = type(value)
    if kind is simdjson.Object or kind is simdjson.Array:
        if len(value) > _REST_ITEMS:
            raise ValueError("more values besides the data than are walked")
        return value.as_dict() if kind is simdjson.Object else value.as_list()
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
    """The arrays and objects in a converted object's values (data taken as numpy is counted by the caller).
    Past ``_REST_ITEMS`` values looked at, it raises: a document whose parameters hold thousands of values is
    orjson's to read, not walked value by value in Python."""
    count = 0
    seen = 0
    stack = list(value.values())
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list:
            count += 1
            seen += len(item)
            stack.extend(item)
        elif kind is dict:
            count += 1
            seen += len(item)
            stack.extend(item.values())
        if seen > _REST_ITEMS:
            raise ValueError("more values besides the data than are walked")
    return count
