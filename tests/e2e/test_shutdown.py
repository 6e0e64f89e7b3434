"""Graceful shutdown: on SIGTERM in-flight requests finish, new connections are refused, and the exit code is 0."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers.ports import free_port

from .server import serve

SLEEPY = "toymodels:Sleepy"


def _refused(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_requests_in_flight_then_exits_0(workers: int, tmp_path: Path) -> None:
    n = 4
    with serve(SLEEPY, "--workers", str(workers), tmp_dir=tmp_path) as server:
        # open the connections first (each answered once), so every slow request is on an accepted connection
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(n)]
        for c in clients:
            assert c.get("/v2/health/ready").status_code == 200
        answers: list[httpx.Response | Exception] = []
        finished_at: list[float] = []

        def slow(c: httpx.Client) -> None:
            try:
                answers.append(c.post("/predict", json={"seconds": 1.5}))
            except httpx.HTTPError as exc:
                answers.append(exc)
            finished_at.append(time.monotonic())

        threads = [threading.Thread(target=slow, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the requests reach the workers, which sleep in the model
        server.process.send_signal(signal.SIGTERM)
        term_at = time.monotonic()

        deadline = term_at + 1.0
        while not _refused(server.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        refused_at = time.monotonic()
        assert _refused(server.url), "still accepting connections 1 s after SIGTERM"

        for t in threads:
            t.join(timeout=30)
        for c in clients:
            c.close()
        assert server.process.wait(timeout=30) == 0, server.log()

    assert len(answers) == n
    for a in answers:
        assert isinstance(a, httpx.Response), repr(a)
        assert a.status_code == 200, a.text
        assert a.json()["prediction"] == 1.5
    assert min(finished_at) > refused_at, "the slow requests did not outlast the listener"


@pytest.mark.parametrize("workers", [1, 2])
def test_requests_still_running_after_the_grace_period_are_cut_off(workers: int, tmp_path: Path) -> None:
    with serve(SLEEPY, "--workers", str(workers), "--graceful-timeout", "1", tmp_dir=tmp_path) as server:
        result: list[httpx.Response | Exception] = []

        def slow() -> None:
            try:
                result.append(httpx.post(server.url + "/predict", json={"seconds": 20}, timeout=30))
            except httpx.HTTPError as exc:
                result.append(exc)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=15)
        took = time.monotonic() - t0
        thread.join(timeout=30)
    assert code == 0, server.log()
    assert took < 8, f"took {took:.1f} s to stop with a 1 s grace period"
    assert len(result) == 1
    assert not (isinstance(result[0], httpx.Response) and result[0].status_code == 200)


@pytest.mark.parametrize(
    ("workers", "sig", "group"),
    [(1, signal.SIGTERM, False), (2, signal.SIGTERM, False), (2, signal.SIGTERM, True), (1, signal.SIGINT, False)],
    ids=["1-worker-SIGTERM", "2-workers-SIGTERM", "2-workers-SIGTERM-to-each", "1-worker-SIGINT"],
)
def test_a_shutdown_delay_keeps_serving_while_not_ready_then_drains(
    workers: int, sig: int, group: bool, tmp_path: Path
) -> None:
    """``group``: each worker is signalled as well as the supervisor, as systemd and ``timeout`` signal a whole
    process group (each worker then has its own signal and the supervisor's forwarded one)."""
    delay = 2.0
    ops_port = free_port()
    args = ("--workers", str(workers), "--shutdown-delay", str(delay), "--metrics-port", str(ops_port))
    with serve(SLEEPY, *args, tmp_dir=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=10) as kept, httpx.Client(timeout=30) as slow:
            before = kept.post("/predict", json={"seconds": 0.01})  # a connection kept alive
            assert before.status_code == 200 and "connection" not in before.headers
            # a request in progress when the signal comes (its head read, its body still to come): its answer, after
            # the signal, closes its connection too
            release = threading.Event()

            def body() -> Iterator[bytes]:
                yield b'{"seconds": '
                release.wait(10)
                yield b"0.01}"

            in_progress = slow.build_request("POST", server.url + "/predict", content=body())
            before_signal: list[httpx.Response | Exception] = []
            sent = threading.Thread(target=lambda: before_signal.append(_send(slow, in_progress)))
            sent.start()
            time.sleep(0.3)
            if group:
                pids = server.worker_pids()
                assert len(pids) == workers, pids
                for pid in pids:
                    os.kill(pid, sig)
            server.process.send_signal(sig)  # (SIGINT first, as Ctrl+C: the same delay)
            term_at = time.monotonic()
            time.sleep(0.5)
            # during the delay: not ready on either port, but both the kept connection and a new one are served,
            # each answer closing its connection, so that a client that does not check readiness leaves too
            ready = kept.get("/v2/health/ready")
            assert ready.status_code == 503 and ready.headers["connection"] == "close"
            ops_ready = httpx.get(f"http://127.0.0.1:{ops_port}/v2/health/ready", timeout=5)
            assert ops_ready.status_code == 503
            again = kept.post("/predict", json={"seconds": 0.01})  # (on a new connection: the last one closed)
            assert again.status_code == 200 and again.headers["connection"] == "close"
            assert not _refused(server.url), "the listener closed before the shutdown delay ended"
            fresh = httpx.post(server.url + "/predict", json={"seconds": 0.01}, timeout=10)
            assert fresh.status_code == 200 and fresh.headers["connection"] == "close", fresh.text
            release.set()
            sent.join(timeout=10)
            # a request still running when the delay ends is finished within the grace period
            running = kept.build_request("POST", "/predict", json={"seconds": delay})
            result: list[httpx.Response | Exception] = []
            thread = threading.Thread(target=lambda: result.append(_send(kept, running)))
            thread.start()
            assert time.monotonic() - term_at < delay, "the checks above took longer than the delay"
            # after it: the listener closes and the process exits 0
            while not _refused(server.url) and time.monotonic() < term_at + delay + 3:
                time.sleep(0.05)
            refused_after = time.monotonic() - term_at
            thread.join(timeout=30)
        assert server.process.wait(timeout=30) == 0, server.log()
        log = server.log()
    assert delay <= refused_after < delay + 3, f"the listener closed {refused_after:.1f} s after the signal"
    assert len(before_signal) == 1 and len(result) == 1, (before_signal, result)
    for answer in (*before_signal, *result):
        assert isinstance(answer, httpx.Response), repr(answer)
        assert answer.status_code == 200 and answer.headers["connection"] == "close", answer.text
    assert len(result) == 1 and result[0].json()["prediction"] == delay
    if workers > 1:  # the supervisor waits for both before it would kill a worker
        assert "(shutdown delay 2 s, then grace period" in log, log


def _send(client: httpx.Client, request: httpx.Request) -> httpx.Response | Exception:
    try:
        return client.send(request)
    except httpx.HTTPError as exc:
        return exc


def test_during_the_shutdown_delay_sigint_stops_at_once_and_a_repeated_sigterm_changes_nothing(
    tmp_path: Path,
) -> None:
    with serve(SLEEPY, "--shutdown-delay", "30", tmp_dir=tmp_path) as server:
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)  # (systemd and `timeout` signal every process of the group)
        time.sleep(0.5)
        assert not _refused(server.url), "the listener closed before the shutdown delay ended"
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        code = server.process.wait(timeout=15)
        took = time.monotonic() - t0
    assert code == 0, server.log()
    assert took < 5, f"took {took:.1f} s to stop after SIGINT"
