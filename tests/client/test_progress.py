"""The job progress bar: on a terminal one line rewritten with \\r; elsewhere (a log, a pipe) throttled lines of
their own, never a \\r. A job waiting for its key's row limit says so."""

from __future__ import annotations

import io
from typing import Any

from helpers.clock import Clock
from modelapi.client.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _status(done: int, waiting: dict[str, Any] | None = None, total: int = 8, state: str = "running") -> dict[str, Any]:
    return {"status": state, "progress": {"rows_done": done, "rows_total": total}, "waiting": waiting}


def test_a_waiting_job_says_which_limit_holds_it() -> None:
    out = Terminal()
    bar = Progress(out)
    bar.show(_status(4, {"limit": "6rows/s", "detail": "waiting for API key 'slow' ..."}))
    waiting = out.getvalue()
    assert waiting.startswith("\r")
    assert waiting.endswith(" 4/8 rows, waiting for the key's row limit 6rows/s")
    bar.show(_status(6))
    line = out.getvalue()[len(waiting) :]
    assert line.startswith("\r")
    assert line.rstrip(" ").endswith(" 6/8 rows") and len(line) == len(waiting)  # the longer line is covered
    bar.end()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_off_a_terminal_progress_is_throttled_lines_and_never_a_carriage_return() -> None:
    out, clock = io.StringIO(), Clock(0.0)  # a StringIO is no TTY, as a log file or a pipe is not
    bar = Progress(out, clock=clock)
    bar.show(_status(0, total=1000, state="queued"))
    for done in range(0, 1001, 5):  # a poll every 0.25 s, 5 rows each: 200 polls over 50 s
        clock.now += 0.25
        bar.show(_status(done, total=1000))
    bar.show(_status(1000, total=1000, state="succeeded"))
    bar.show(_status(1000, total=1000, state="succeeded"))  # the same final state again: no second line
    bar.end()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert text.endswith("\n") and all(line.endswith(" rows") for line in lines)
    assert lines[0].startswith("queued ") and lines[0].endswith(" 0/1,000 rows")
    assert lines[-1].startswith("succeeded ") and lines[-1].endswith(" 1,000/1,000 rows")
    assert sum(line.startswith("succeeded ") for line in lines) == 1  # the final state once
    # the first line of each status, one per 10 % step: not one per poll
    assert 11 <= len(lines) <= 14, lines
    assert len(lines) == len(set(lines))


def test_off_a_terminal_a_slow_job_still_shows_a_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock(0.0)
    bar = Progress(out, clock=clock)
    for done in range(1, 41):  # 1 row in 1,000 every second: no 10 % step for 40 s
        clock.now += 1.0
        bar.show(_status(done, total=1000))
    lines = out.getvalue().splitlines()
    assert len(lines) == 8  # the first (1 s), then one every 5 s: 6, 11, ... 36
    assert lines[1].endswith(" 6/1,000 rows")


def test_off_a_terminal_the_final_state_is_written_at_the_end_if_throttled() -> None:
    out, clock = io.StringIO(), Clock(0.0)
    bar = Progress(out, clock=clock)
    bar.show(_status(1, total=1000))
    bar.show(_status(2, total=1000))  # within the interval, same step: held back
    assert out.getvalue().count("\n") == 1
    bar.end()
    assert out.getvalue().splitlines()[-1].endswith(" 2/1,000 rows")
    bar.end()  # once only
    assert out.getvalue().count("\n") == 2


def test_a_waiting_job_off_a_terminal_gets_a_line_when_it_starts_and_stops_waiting() -> None:
    out, clock = io.StringIO(), Clock(0.0)
    bar = Progress(out, clock=clock)
    bar.show(_status(4, total=100))
    bar.show(_status(4, {"limit": "6rows/s"}, total=100))
    bar.show(_status(5, total=100))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1].endswith("waiting for the key's row limit 6rows/s") and lines[2].endswith(" 5/100 rows")


def test_off_a_terminal_a_different_limit_gets_its_line_at_once_and_a_countdown_does_not() -> None:
    out, clock = io.StringIO(), Clock(0.0)
    bar = Progress(out, clock=clock)

    def wait(limit: str, seconds: int) -> dict[str, Any]:
        detail = f"waiting for API key 'slow' ...: admits the next 3 rows in about {seconds} s"
        return {"reason": "row_limit", "limit": limit, "rows": 3, "detail": detail}

    bar.show(_status(4, wait("600rows/min", 14), total=100))
    clock.now += 1.0
    bar.show(_status(4, wait("600rows/min", 13), total=100))  # the same wait counting down: no line of its own
    assert len(out.getvalue().splitlines()) == 1
    clock.now += 1.0
    bar.show(_status(4, wait("1000rows/day", 50400), total=100))  # another limit holds it now: a line at once
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("waiting for the key's row limit 1000rows/day")
    clock.now += 1.0
    bar.show(_status(4, wait("600rows/min", 5), total=100))  # back to the first (e.g. `keys update` lifted the quota)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].endswith("waiting for the key's row limit 600rows/min")
