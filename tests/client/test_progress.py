"""The job progress bar: a job waiting for its key's row limit says so, and the line after it covers it."""

from __future__ import annotations

import io
from typing import Any

from modelapi.client.progress import Progress


def _status(done: int, waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": "running", "progress": {"rows_done": done, "rows_total": 8}, "waiting": waiting}


def test_a_waiting_job_says_which_limit_holds_it() -> None:
    out = io.StringIO()
    bar = Progress(out)
    bar.show(_status(4, {"limit": "6rows/s", "detail": "waiting for API key 'slow' ..."}))
    waiting = out.getvalue()
    assert waiting.endswith(" 4/8 rows, waiting for the key's row limit 6rows/s")
    bar.show(_status(6))
    line = out.getvalue()[len(waiting) :]
    assert line.rstrip(" ").endswith(" 6/8 rows") and len(line) == len(waiting)  # the longer line is covered
