"""``modelapi serve --workers 2``: one port, a supervisor that replaces a killed worker, no Nagle delay."""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers.ports import free_port

from .server import serve

SLEEPY = "toymodels:Sleepy"


def _pid_of_answer(url: str, seconds: float = 0.0) -> int:
    """One request on a fresh connection (so the kernel may hand it to any worker); the worker's pid.

    http.client rather than httpx: a new httpx client per request spends ~10 ms of CPU on TLS set-up, which
    on two shared cores would slow the very workers under test.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        body = json.dumps({"seconds": seconds})
        conn.request("POST", "/predict", body, {"content-type": "application/json", "connection": "close"})
        r = conn.getresponse()
        text = r.read()
    finally:
        conn.close()
    assert r.status == 200, text
    return int(json.loads(text)["pid"])


def test_two_workers_share_one_port_and_the_banner_is_printed_once(tmp_path: Path) -> None:
    with serve(SLEEPY, "--workers", "2", tmp_dir=tmp_path) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while seen != set(workers) and time.monotonic() < deadline:
            # two slow requests at once: while one worker sleeps the other accepts, so both answer
            with ThreadPoolExecutor(2) as pool:
                seen.update(pool.map(lambda _: _pid_of_answer(server.url, 0.2), range(2)))
        assert seen == set(workers)
        assert server.log().count("modelapi is serving") == 1
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_keep_alive_requests_are_not_delayed_by_nagle(workers: int, tmp_path: Path) -> None:
    """With Nagle's algorithm on, each keep-alive response waits for a delayed ACK: ~40 ms instead of ~1 ms."""
    with serve(SLEEPY, "--workers", str(workers), tmp_dir=tmp_path) as server, httpx.Client() as http:
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            r = http.post(server.url + "/predict", json={"seconds": 0.0})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        assert statistics.median(times) < 0.02, f"p50 {statistics.median(times) * 1000:.1f} ms"


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(tmp_path: Path) -> None:
    with serve(SLEEPY, "--workers", "2", tmp_dir=tmp_path) as server:
        first = server.worker_pids()
        victim = first[0]
        stop = threading.Event()
        ok: list[tuple[float, float, int]] = []  # (started, finished, pid)
        failed: list[tuple[float, str]] = []  # (started, error)

        def client() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    pid = _pid_of_answer(server.url, 0.1)
                    ok.append((t0, time.monotonic(), pid))
                except (OSError, http.client.HTTPException, AssertionError) as exc:
                    failed.append((t0, repr(exc)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        served_before = {pid for _, _, pid in ok}
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join()

        assert victim in served_before, "the victim served nothing before it was killed: not under load"
        replacements = [p for p in server.worker_pids() if p not in first]
        assert len(replacements) == 1, server.log()
        back = [finished for _, finished, pid in ok if pid == replacements[0]]
        assert back, f"the replacement answered nothing:\n{server.log()}"
        # back within 2 s: its first answer, less the request's own 0.1 s of sleep
        assert min(back) - 0.1 - killed_at < 2.0
        # every failure was a request already in flight when the worker died; every later request succeeded
        assert all(started < killed_at for started, _ in failed), failed
        assert len(failed) <= len(threads), failed
        assert sum(1 for started, _, _ in ok if started > killed_at) > 10
        assert "was killed by SIGKILL; starting a replacement" in server.log()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0


def test_a_model_that_cannot_load_stops_every_worker_with_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bogus"
    bogus.write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "modelapi", "serve", str(bogus), "--workers", "2", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("modelapi: error:"), out.stderr
    assert "model.bogus" in out.stderr
    assert "Traceback" not in out.stderr
