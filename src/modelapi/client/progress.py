"""Job progress on stderr: ``running   [#########             ]  31.0% 310,000/1,000,000 rows``.

On a terminal, one line rewritten with ``\\r``. Anywhere else (a log file, a CI job's output, a pipe) a ``\\r``
is no line ending: the states would run together on one line. There each state that matters is a line of its
own, throttled: the first, each change of status or of the row-limit wait, each 10 % step, otherwise at most one
every ``interval`` seconds, and the final state once. The wait changes when it starts, when it ends, and when a
different limit (or reason) holds the job; its countdown (``rows``, ``until``, the seconds in ``detail``) is no
change, only progress like the rest.

Written by hand rather than with tqdm: the client keeps its dependencies to httpx and numpy. The
``modelapi predict`` command shows the same bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO


def _isatty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    #: seconds between two lines off a terminal, unless the status, a 10 % step or the row-limit wait changes first
    interval = 5.0

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = _isatty(out)
        self.clock = clock
        self.shown = ""  # the terminal's current line; off a terminal, the last line written
        self.latest = ""  # off a terminal: the last state given, written or not
        self._key: tuple[Any, ...] | None = None  # status, 10 % step and wait (reason, limit) of the last line written
        self._at = 0.0

    def show(self, status: dict[str, Any]) -> None:
        p = status["progress"]
        done, total = p["rows_done"], p["rows_total"]
        frac = done / total if total else 0.0
        bar = "#" * int(frac * 30)
        line = f"{status['status']:<9} [{bar:<30}] {frac:6.1%} {done:,}/{total:,} rows"
        waiting = status.get("waiting")  # a job held by its API key's row limit (docs/jobs.md#row-limits)
        if waiting:
            line += f", waiting for the key's row limit {waiting['limit']}"
        if self.tty:
            line = "\r" + line
            if line != self.shown:
                # spaces over what a longer line before left on the terminal
                self.out.write(line + " " * (len(self.shown) - len(line)))
                self.out.flush()
                self.shown = line
            return
        self.latest = line
        # the wait as the line names it: which limit holds the job, and why; not its countdown
        wait = (waiting.get("reason"), waiting["limit"]) if waiting else None
        key = (status["status"], int(frac * 10), wait)
        now = self.clock()
        if line != self.shown and (key != self._key or now - self._at >= self.interval):
            self._write(line, key, now)

    def _write(self, line: str, key: tuple[Any, ...] | None, now: float) -> None:
        self.out.write(line.rstrip() + "\n")
        self.out.flush()
        self.shown, self._key, self._at = line, key, now

    def end(self) -> None:
        if self.tty:
            if self.shown:
                self.out.write("\n")
                self.out.flush()
        elif self.latest and self.latest != self.shown:  # the final state, unless its line is written already
            self._write(self.latest, None, self.clock())


def progress_out(progress: bool | TextIO, default: TextIO) -> TextIO | None:
    """Where ``wait(progress=...)`` draws its bar: ``True``: ``default`` (stderr), ``False``: nowhere, or a stream."""
    if progress is True:
        return default
    if progress is False:
        return None
    return progress
