"""The supervisor with trivial workers (no HTTP): start, report, restart, stop, and start-up failures."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

from modelapi.errors import ModelLoadError
from modelapi.supervisor import Supervisor, WorkerContext


def _idle_worker(context: WorkerContext) -> int:
    """Reports ready, then waits for SIGTERM and exits 0, as a draining uvicorn would."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    context.report_ready(f"banner from worker {context.index}")
    while not stop.wait(0.05):
        pass
    return 0


def _run_with(
    supervisor: Supervisor, during: Callable[[Supervisor], None], timeout: float = 30
) -> tuple[int | BaseException, float]:
    """Run the supervisor in this (the main) thread; ``during`` runs in a helper thread meanwhile."""
    helper = threading.Thread(target=during, args=(supervisor,), daemon=True)
    helper.start()
    started = time.monotonic()
    try:
        result: int | BaseException = supervisor.run()
    except ModelLoadError as exc:
        result = exc
    helper.join(timeout)
    return result, time.monotonic() - started


def _wait(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def sock() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_banner_once_all_are_ready_restart_after_kill_and_clean_stop(sock: socket.socket) -> None:
    banners: list[str] = []
    sup = Supervisor(2, _idle_worker, sockets=[sock], grace_period_s=5, on_ready=banners.append)
    seen: dict[str, object] = {}

    def during(s: Supervisor) -> None:
        _wait(lambda: bool(banners))
        first = list(s.pids)
        seen["first"] = first
        os.kill(first[0], signal.SIGKILL)
        _wait(lambda: len(s.pids) == 2 and first[0] not in s.pids)
        seen["second"] = list(s.pids)
        os.kill(os.getpid(), signal.SIGTERM)

    result, _ = _run_with(sup, during)
    assert result == 0
    assert banners == ["banner from worker 0"] or banners == ["banner from worker 1"]
    assert len(seen["second"]) == 2  # type: ignore[arg-type]
    assert sock.fileno() == -1  # the supervisor closed its copy of the listener


def test_a_worker_failing_at_start_stops_all_and_raises(sock: socket.socket) -> None:
    def main(context: WorkerContext) -> int:
        if context.index == 1:
            context.report_failed(ModelLoadError("no such model file: x.onnx"))
            return 2
        return _idle_worker(context)

    sup = Supervisor(2, main, sockets=[sock], grace_period_s=5)
    result, took = _run_with(sup, lambda s: None)
    assert isinstance(result, ModelLoadError)
    assert "x.onnx" in str(result)
    assert took < 15


def test_workers_outliving_the_grace_period_are_killed(sock: socket.socket) -> None:
    def stubborn(context: WorkerContext) -> int:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        context.report_ready("")
        time.sleep(60)
        return 0

    ready: list[str] = []
    sup = Supervisor(1, stubborn, sockets=[sock], grace_period_s=0.2, kill_margin_s=0.5, on_ready=ready.append)

    def during(s: Supervisor) -> None:
        _wait(lambda: bool(ready))
        os.kill(os.getpid(), signal.SIGTERM)

    result, took = _run_with(sup, during)
    assert result == 1
    assert took < 10


def test_a_shutdown_delay_puts_off_the_kill_by_as_long(sock: socket.socket) -> None:
    """A worker serves on for its shutdown delay before it drains: the supervisor kills it only once the delay, the
    grace period and the margin have all passed."""

    def delayed(context: WorkerContext) -> int:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        context.report_ready("")
        stop.wait(60)
        time.sleep(1.5)  # the delay (2 s) not yet over: past the grace period and the margin without it
        return 0

    ready: list[str] = []
    sup = Supervisor(
        1, delayed, sockets=[sock], grace_period_s=0.5, shutdown_delay_s=2.0, kill_margin_s=0.5, on_ready=ready.append
    )

    def during(s: Supervisor) -> None:
        _wait(lambda: bool(ready))
        os.kill(os.getpid(), signal.SIGTERM)

    result, took = _run_with(sup, during)
    assert result == 0, "killed before its shutdown delay and grace period were over"
    assert took < 10
