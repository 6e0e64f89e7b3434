"""Sampled gauges: queued requests, the jobs database's queue, this process's CPU and memory."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import insert

from helpers.metrics import parse, value
from modelapi import metrics
from modelapi.errors import ModelNotFound
from modelapi.metrics import procstats


def scrape() -> dict:  # type: ignore[type-arg]
    return parse(metrics.render()[0])


def test_process_stats() -> None:
    stats = procstats.current()
    assert stats.pid == os.getpid()
    assert stats.cpu_seconds > 0
    assert stats.resident_bytes > 1_000_000
    assert time.time() - 7 * 86400 < stats.start_time <= time.time()
    metrics.refresh()
    s = scrape()
    pid = str(os.getpid())
    assert value(s, "modelapi_process_cpu_seconds", pid=pid) == pytest.approx(stats.cpu_seconds, abs=5)
    assert value(s, "modelapi_process_start_time_seconds", pid=pid) == pytest.approx(stats.start_time)


def test_resident_memory_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = open

    def no_proc(path: object, *args: object, **kwargs: object) -> object:
        if str(path).startswith("/proc"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_proc)
    assert procstats.resident_bytes() > 1_000_000  # the peak from getrusage
    assert procstats.start_time() == procstats._IMPORTED


def test_queued_gauge_and_versions_that_go() -> None:
    now = {("iris", "1"): 3, ("iris", "2"): 1}
    metrics.watch_queues(lambda: now)
    metrics.refresh()
    assert value(scrape(), "modelapi_requests_queued", model="iris", version="1") == 3
    now = {("iris", "2"): 4}
    metrics.refresh()
    s = scrape()
    assert value(s, "modelapi_requests_queued", model="iris", version="1") == 0
    assert value(s, "modelapi_requests_queued", model="iris", version="2") == 4


def test_queued_in_a_repository() -> None:
    def handle(waiting: int | None) -> SimpleNamespace:
        return SimpleNamespace(batcher=None if waiting is None else SimpleNamespace(waiting=waiting))

    entries = {"iris": SimpleNamespace(serving={"1": handle(2), "2": handle(None)})}

    def entry(name: str) -> SimpleNamespace:
        if name not in entries:
            raise ModelNotFound(name)
        return entries[name]

    repository = SimpleNamespace(names=lambda: ["iris", "gone"], entry=entry)
    assert metrics.queued_in(repository)() == {("iris", "1"): 2}  # type: ignore[arg-type]


def test_job_counts_from_the_store(tmp_path: Path) -> None:
    from modelapi.jobs.store import FAILED, QUEUED, RUNNING, JobStore, jobs, sqlite_url

    store = JobStore(sqlite_url(tmp_path))
    rows = [QUEUED, QUEUED, QUEUED, RUNNING, FAILED]
    with store.engine.begin() as conn:
        for i, state in enumerate(rows):
            conn.execute(
                insert(jobs).values(
                    id=f"j{i}", model="iris", fingerprint="f", state=state, chunk_rows=10, created_at=time.time()
                )
            )
    try:
        assert metrics.job_counts(store)() == {"queued": 3, "running": 1}
        metrics.watch_jobs(metrics.job_counts(store))
        metrics.refresh()
        s = scrape()
        assert value(s, "modelapi_jobs_queued") == 3
        assert value(s, "modelapi_jobs_running") == 1
    finally:
        store.close()


def test_blocking_samplers_run_on_a_thread_and_failures_are_contained() -> None:
    seen: dict[str, int | None] = {}
    metrics.add_sampler(lambda: seen.__setitem__("quick", threading.get_ident()))
    metrics.add_sampler(lambda: seen.__setitem__("slow", threading.get_ident()), blocking=True)
    metrics.add_sampler(lambda: 1 / 0)  # logged, the others still run
    metrics.add_sampler(lambda: seen.__setitem__("after", 1))
    asyncio.run(metrics.refresh_async())
    assert seen["quick"] == threading.get_ident()
    assert seen["slow"] != threading.get_ident()
    assert seen["after"] == 1


def test_sample_forever_samples_until_cancelled() -> None:
    calls: list[float] = []
    metrics.add_sampler(lambda: calls.append(time.monotonic()))

    async def main() -> None:
        task = asyncio.create_task(metrics.sample_forever(0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(calls) >= 3
