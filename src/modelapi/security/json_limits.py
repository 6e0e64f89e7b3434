"""Nesting depth and element count of a JSON body, measured before it is parsed.

Parsing allocates a Python object per value: 32 MiB of ``[[],[],...]`` becomes about 1 GB and 14 s of CPU,
and orjson itself only refuses nesting deeper than 1024. ``check`` bounds both, cheaply:

- a bound that holds for the raw bytes holds for the document: a body with at most ``max_depth`` opening
  brackets cannot nest deeper, nor can one whose brackets alone (strings' included) do not; one with fewer
  than ``max_elements`` commas cannot hold more elements. Real bodies stop there, after a few ``bytes.count``
  and ``bytes.translate`` passes, at a fraction of the cost of parsing them;
- otherwise one vectorised pass with numpy masks out string contents (quotes escaped by an odd run of
  backslashes included) and measures the structure itself.

Elements are counted as commas outside strings, plus one: array elements and object members, in total, give or
take one per container. The body need not be valid JSON: the parser still judges that afterwards.
"""

from __future__ import annotations

import numpy as np

from ..errors import MalformedRequest, PayloadTooLarge

#: +1 for an opening bracket, -1 for a closing one, 0 for any other byte
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
#: every byte but the brackets, for ``bytes.translate`` to delete
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: every byte but the opening brackets, for ``bytes.translate`` to delete
_NOT_OPENINGS = bytes(b for b in range(256) if b not in b"[{")
#: for ``bytes.translate``: braces become square brackets (depth does not care which)
_SQUARE = bytes.maketrans(b"{}", b"[]")


def check(body: bytes, *, max_depth: int, max_elements: int) -> int:
    """Raise ``MalformedRequest`` (400) when ``body`` nests deeper than ``max_depth``, ``PayloadTooLarge``
    (413) when it holds more than ``max_elements`` elements. Returns ``openings(body)``, counted on the way."""
    brackets = body.translate(_SQUARE, _NOT_BRACKETS)
    deep = _deeper(brackets, max_depth)
    commas = body.count(b",") if len(body) >= max_elements else 0  # fewer bytes than the limit: fewer commas
    if not deep and commas + 1 <= max_elements:
        return brackets.count(b"[")
    if b'"' not in body:  # no strings: the bounds are exact
        depth, elements = _depth(brackets), commas + 1
    else:
        depth, elements = measure(body)
    if depth > max_depth:
        raise MalformedRequest(f"the JSON body nests {depth} levels deep; the limit is {max_depth} (max_json_depth)")
    if elements > max_elements:
        raise PayloadTooLarge(
            f"the JSON body holds {elements} elements; the limit is {max_elements} (max_json_elements)"
        )
    return brackets.count(b"[")


def openings(body: bytes) -> int:
    """The ``[`` and ``{`` bytes in ``body``, those in strings included: in valid JSON, an upper bound on its arrays
    and objects, reached when no string holds one."""
    return len(body.translate(None, _NOT_OPENINGS))


def _deeper(brackets: bytes, limit: int) -> bool:
    """Whether a string of square brackets (``[[][]...]`` for a list of records) nests deeper than ``limit``.

    Each round of ``replace`` removes the innermost pairs, one level; a body of ordinary depth empties in a
    few rounds. Long strings go to numpy instead, whose cost does not grow with the limit.
    """
    if len(brackets) <= limit:
        return False
    if len(brackets) > 65536:
        return _depth(brackets) > limit
    for _ in range(limit):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return False
    return True


def _depth(brackets: bytes) -> int:
    return int(np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int32).max(initial=0))


def measure(body: bytes) -> tuple[int, int]:
    """(deepest nesting, commas outside strings + 1) of ``body``."""
    data = np.frombuffer(body, dtype=np.uint8)
    step = _STEP[data]
    if b'"' not in body:
        commas = body.count(b",")
    else:
        quotes = data == ord('"')
        if b"\\" in body:
            quotes &= ~_escaped(data)
        # a byte is inside a string when an odd number of (unescaped) quotes precede it; the quotes themselves
        # count as inside or outside, which does not matter, since a quote is no bracket and no comma
        outside = (np.cumsum(quotes, dtype=np.int32) & 1) == 0
        step *= outside
        commas = int(np.count_nonzero((data == ord(",")) & outside))
    depth = int(np.cumsum(step, dtype=np.int32).max(initial=0))
    return depth, commas + 1


def _escaped(data: np.ndarray) -> np.ndarray:
    """Which bytes follow an odd run of backslashes (so a quote there is escaped)."""
    backslash = data == ord("\\")
    escaped = np.zeros(len(data), dtype=bool)
    # runs of backslashes: start and end indices; the byte after a run of odd length is escaped
    edges = np.diff(np.concatenate(([0], backslash.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    odd = ((ends - starts) & 1).astype(bool)
    after = ends[odd]
    escaped[after[after < len(data)]] = True
    return escaped
