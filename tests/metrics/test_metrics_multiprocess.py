"""Multiprocess mode: worker processes write, any process renders the same totals; a dead worker's gauges go.

The test process plays the supervisor: it calls ``setup(directory)``, forks two workers that each record
``N`` requests and keep one call in flight, and forks a third process that renders a scrape.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from multiprocessing.queues import Queue
from pathlib import Path

from helpers.metrics import matching, parse, value
from modelapi import metrics
from modelapi.events import BatchRun, ModelStateChanged, RequestFinished, RequestStarted

N = 25
fork = multiprocessing.get_context("fork")


def worker(pids: Queue[int]) -> None:
    observer = metrics.MetricsObserver()
    observer.model_state_changed(ModelStateChanged("iris", "1", "LOADING", None))
    observer.model_state_changed(ModelStateChanged("iris", "1", "READY", "LOADING"))
    for _ in range(N):
        observer.request_started(RequestStarted("iris", "1", "v2", None))
        observer.request_finished(RequestFinished("iris", "1", "v2", 200, 2, 0.001, 0.002, 0.004, None))
    observer.batch_run(BatchRun("iris", "1", 2 * N, N, 0.05))
    observer.request_started(RequestStarted("iris", "1", "v2", None))  # stays in flight
    metrics.refresh()  # this process's CPU and memory
    pids.put(os.getpid())
    time.sleep(120)  # until the test kills it


def renderer(bodies: Queue[bytes]) -> None:
    bodies.put(metrics.render()[0])


def scrape_from_another_process() -> dict:  # type: ignore[type-arg]
    bodies: Queue[bytes] = fork.Queue()
    process = fork.Process(target=renderer, args=(bodies,))
    process.start()
    body = bodies.get(timeout=30)
    process.join(30)
    return parse(body)


def test_totals_across_workers_and_a_dead_worker(multiproc_dir: Path) -> None:
    pids: Queue[int] = fork.Queue()
    workers = [fork.Process(target=worker, args=(pids,), daemon=True) for _ in range(2)]
    for process in workers:
        process.start()
    try:
        reported = {pids.get(timeout=30), pids.get(timeout=30)}
        assert reported == {p.pid for p in workers}
        mv = {"model": "iris", "version": "1"}
        per_request = {**mv, "protocol": "v2"}

        s = scrape_from_another_process()
        assert value(s, "modelapi_requests_total", **per_request, code="2xx") == 2 * N
        assert value(s, "modelapi_rows_inferred_total", **per_request) == 4 * N
        assert value(s, "modelapi_request_duration_seconds_count", **per_request) == 2 * N
        assert value(s, "modelapi_request_duration_seconds_bucket", **per_request, le="0.005") == 2 * N
        assert value(s, "modelapi_batches_total", **mv) == 2
        assert value(s, "modelapi_model_loads_total", **mv) == 2  # every worker loads its own copy
        assert value(s, "modelapi_requests_in_flight", **mv) == 2
        assert value(s, "modelapi_model_state", **mv, state="READY") == 2
        cpu = matching(s, "modelapi_process_cpu_seconds")
        assert {dict(k)["pid"] for k in cpu} == {str(p) for p in reported}
        assert all(v > 0 for v in matching(s, "modelapi_process_resident_memory_bytes").values())

        dead, alive = workers
        assert dead.pid is not None
        os.kill(dead.pid, signal.SIGKILL)
        dead.join(30)
        metrics.worker_died(dead.pid)  # what the supervisor does when it reaps a worker

        s = scrape_from_another_process()
        # counters and histograms of the dead worker are kept
        assert value(s, "modelapi_requests_total", **per_request, code="2xx") == 2 * N
        assert value(s, "modelapi_request_duration_seconds_count", **per_request) == 2 * N
        assert value(s, "modelapi_batch_rows_sum", **mv) == 4 * N
        assert value(s, "modelapi_model_loads_total", **mv) == 2
        # its gauges are gone
        assert value(s, "modelapi_requests_in_flight", **mv) == 1
        assert value(s, "modelapi_model_state", **mv, state="READY") == 1
        cpu = matching(s, "modelapi_process_cpu_seconds")
        assert {dict(k)["pid"] for k in cpu} == {str(alive.pid)}
    finally:
        for process in workers:
            process.kill()
            process.join(30)


def test_setup_wipes_stale_files_and_shutdown_removes_them(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "metrics-1"
    directory.mkdir(parents=True)
    (directory / "counter_99999.db").write_bytes(b"stale")
    (directory / "notes.txt").write_text("not ours")
    metrics.setup(directory)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert metrics.multiprocess() and metrics.directory() == directory
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    metrics.MetricsObserver().job_submitted("iris")
    assert any(p.suffix == ".db" for p in directory.iterdir())
    metrics.shutdown()
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]  # only our files go
    metrics.setup(None)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not metrics.multiprocess()


def test_worker_died_is_harmless_in_single_process_mode() -> None:
    metrics.worker_died(os.getpid())


def test_importing_creates_no_metric(tmp_path: Path) -> None:
    """prometheus-client picks its value class from the environment when a metric is made: nothing may be made
    at import, and setup() after prometheus_client is imported still switches to multiprocess files."""
    code = f"""
import prometheus_client
import modelapi, modelapi.metrics as m
from modelapi.metrics import runtime
assert runtime._state.families is None
assert not [n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("modelapi")]
m.setup(__import__("pathlib").Path({str(tmp_path / "mp")!r}))
m.MetricsObserver().job_submitted("x")
assert any(p.name.startswith("counter_") for p in (__import__("pathlib").Path({str(tmp_path / "mp")!r})).iterdir())
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
