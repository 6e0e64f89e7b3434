"""Per-key limits: how many requests or rows one API key may use per second, minute, hour or day.

A key carries any number of limits (``modelapi keys create --rate 6000/min --quota 1000000rows/day``), stored
with the key in the key store as JSON and read with the key (at most ``key_cache_s`` apart, ``key_cache.py``), so
a change takes effect everywhere within that. Each limit is written ``COUNT[UNIT]/WINDOW``:

- ``COUNT``: a positive integer (``_`` or ``,`` may group digits: ``1_000_000``);
- ``UNIT``: ``requests`` (the default; also ``request``, ``req``) or ``rows`` (also ``row``);
- ``WINDOW``: ``s`` (``sec``, ``second``), ``min`` (``minute``), ``h`` (``hour``) or ``day`` (``d``).

Enforcement (``security/meter.py``) is a sliding window over each limit's window length. Plain data, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

What = Literal["requests", "rows"]

WINDOWS: dict[str, int] = {
    "s": 1, "sec": 1, "second": 1,
    "min": 60, "minute": 60,
    "h": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
WINDOW_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_SHORT = {1: "s", 60: "min", 3600: "h", 86400: "day"}
UNITS: dict[str, What] = {
    "": "requests", "request": "requests", "requests": "requests", "req": "requests", "row": "rows", "rows": "rows",
}  # fmt: skip
MAX_LIMITS = 8  # per key: each one is a counter touched on every request of the key
_SPEC = re.compile(r"\s*([0-9][0-9_,]*)\s*([a-z]*)\s*/\s*([a-z]+)\s*")
SYNTAX = "COUNT[rows|requests]/s|min|h|day, e.g. 100/s, 6000/min, 1000000rows/day"


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` requests (or rows) in any ``window_s`` seconds."""

    what: What
    count: int
    window_s: int

    @property
    def spec(self) -> str:
        """The limit as the flag takes it: ``6000/min``, ``1000000rows/day``."""
        unit = "rows" if self.what == "rows" else ""
        return f"{self.count}{unit}/{_SHORT[self.window_s]}"

    def words(self) -> str:
        """``6000 requests per minute``: for messages."""
        return f"{self.count} {self.what} per {WINDOW_WORDS[self.window_s]}"


def parse_limit(text: str, flag: str = "--rate") -> Limit:
    """One limit from its text; ``ValueError`` naming the flag, the text and the syntax otherwise."""
    match = _SPEC.fullmatch(text.lower())
    if not match:
        raise ValueError(f"{flag} {text!r}: expected {SYNTAX}")
    digits, unit, window = match.groups()
    if unit not in UNITS:
        raise ValueError(f"{flag} {text!r}: the unit is 'requests' (the default) or 'rows', not {unit!r}")
    if window not in WINDOWS:
        raise ValueError(f"{flag} {text!r}: the window is s, min, h or day, not {window!r}")
    count = int(digits.replace("_", "").replace(",", ""))
    if count < 1:
        raise ValueError(f"{flag} {text!r}: the count must be at least 1 (to block a key, revoke it)")
    return Limit(UNITS[unit], count, WINDOWS[window])


def parse_limits(specs: Iterable[tuple[str, str]]) -> tuple[Limit, ...]:
    """``(flag, text)`` pairs to limits; one limit per unit and window (two would contradict each other)."""
    out: list[Limit] = []
    for flag, text in specs:
        limit = parse_limit(text, flag)
        for other in out:
            if (other.what, other.window_s) == (limit.what, limit.window_s):
                raise ValueError(
                    f"{flag} {text!r}: the key already has a limit on {limit.what} per "
                    f"{WINDOW_WORDS[limit.window_s]} ({other.spec}); give one per unit and window"
                )
        out.append(limit)
    if len(out) > MAX_LIMITS:
        raise ValueError(f"--rate/--quota: at most {MAX_LIMITS} limits per key, got {len(out)}")
    return tuple(sorted(out, key=lambda lim: (lim.what, lim.window_s)))


def to_json(limits: Sequence[Limit]) -> str | None:
    """The key store's column: ``None`` for no limits."""
    if not limits:
        return None
    return json.dumps([{"what": lim.what, "count": lim.count, "window_s": lim.window_s} for lim in limits])


def from_json(text: str | None) -> tuple[Limit, ...]:
    if not text:
        return ()
    return tuple(Limit(item["what"], int(item["count"]), int(item["window_s"])) for item in json.loads(text))
