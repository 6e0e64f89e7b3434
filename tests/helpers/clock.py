"""A clock that moves only when the test moves it."""

from __future__ import annotations


class Clock:
    """Called as ``time.monotonic`` is, it reads ``now``, which only the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
