"""The real server's buffered access lines: a request's line is in the log within --access-log-flush-ms, and
a server stopped with SIGTERM (one worker, or workers under the supervisor) has written every request's line."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from .server import serve


def test_a_line_is_in_the_log_within_the_delay(tmp_path: Path) -> None:
    with serve("--state-dir", str(tmp_path / "state"), tmp_dir=tmp_path) as server:  # the default: 50 ms
        took = []
        for _ in range(5):
            rid = httpx.get(server.url + "/v2/health/live").headers["x-request-id"]
            begun = time.monotonic()
            assert rid in server.log_with(rid, timeout=5.0)
            took.append(time.monotonic() - begun)
    assert max(took) < 0.05 + 0.5, took  # the delay, and slack for a machine shared with other work


@pytest.mark.parametrize("workers", ["1", "2"])
def test_after_sigterm_every_requests_line_is_in_the_log(tmp_path: Path, workers: str) -> None:
    """With a delay longer than the test, only the shutdown can have written the lines: the server's own (one
    worker) or each worker's before it exits (two)."""
    args = ("--state-dir", str(tmp_path / "state"), "--access-log-flush-ms", "10000", "--workers", workers)
    with serve(*args, tmp_dir=tmp_path, timeout=90) as server:
        rids = []
        for _ in range(40):  # a connection each, so that both workers get some
            with httpx.Client() as client:
                rids.append(client.get(server.url + "/v2/health/live").headers["x-request-id"])
        before = server.log()
        assert any(rid not in before for rid in rids)  # they wait in the handler
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        log = server.log()
    lines = log.splitlines()
    assert [rid for rid in rids if sum(rid in x for x in lines) != 1] == []  # each on one line, once
