"""A one-line progress bar for jobs, on stderr: ``running   [#########             ]  31.0% 310,000/1,000,000 rows``.

Written by hand rather than with tqdm: one line rewritten with ``\\r`` is all a job needs, it reads the same in
a terminal and in a notebook's output, and the client keeps its dependencies to httpx and numpy. The
``modelapi predict`` command shows the same bar.
"""

from __future__ import annotations

from typing import Any, TextIO


class Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = ""

    def show(self, status: dict[str, Any]) -> None:
        p = status["progress"]
        done, total = p["rows_done"], p["rows_total"]
        frac = done / total if total else 0.0
        bar = "#" * int(frac * 30)
        line = f"\r{status['status']:<9} [{bar:<30}] {frac:6.1%} {done:,}/{total:,} rows"
        waiting = status.get("waiting")  # a job held by its API key's row limit (docs/jobs.md#row-limits)
        if waiting:
            line += f", waiting for the key's row limit {waiting['limit']}"
        if line != self.shown:
            # spaces over what a longer line before left on the terminal
            self.out.write(line + " " * (len(self.shown) - len(line)))
            self.out.flush()
            self.shown = line

    def end(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.out.flush()


def progress_out(progress: bool | TextIO, default: TextIO) -> TextIO | None:
    """Where ``wait(progress=...)`` draws its bar: ``True``: ``default`` (stderr), ``False``: nowhere, or a stream."""
    if progress is True:
        return default
    if progress is False:
        return None
    return progress
