"""Gauges sampled rather than counted: queued requests, the jobs database's queue, this process's CPU and memory.

A sampler is a function that reads something and sets gauges. Each worker runs its own samplers: on its event
loop every ``interval_s`` (``sample_forever``, a task the app starts) and right before it answers a scrape
(``refresh_async``). In multiprocess mode the gauges of the other workers are then at most ``interval_s``
old. Samplers marked ``blocking`` (a database query) run on a thread from ``refresh_async``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import ModelNotFound
from . import procstats
from .runtime import families, flush

if TYPE_CHECKING:
    from ..jobs.store import JobStore
    from ..repository.registry import Repository

log = logging.getLogger("modelapi.metrics")
Sampler = Callable[[], None]
QueueSource = Callable[[], Mapping[tuple[str, str], int]]
JobCounts = Callable[[], Mapping[str, int]]

_samplers: list[tuple[Sampler, bool]] = []


def add_sampler(sampler: Sampler, *, blocking: bool = False) -> None:
    _samplers.append((sampler, blocking))


def remove_sampler(sampler: Sampler) -> None:
    """Stop running ``sampler`` (an app that ends removes its own)."""
    _samplers[:] = [(s, b) for s, b in _samplers if s is not sampler]


def clear_samplers() -> None:
    _samplers.clear()


def sample_process() -> None:
    stats = procstats.current()
    cpu, memory, started = families().process(stats.pid)
    cpu.set(stats.cpu_seconds)
    memory.set(stats.resident_bytes)
    started.set(stats.start_time)


def watch_queues(source: QueueSource) -> Sampler:
    """Sample ``source()``, {(model, version): requests waiting for a batch}, into ``modelapi_requests_queued``;
    a version that is gone reads 0."""
    seen: set[tuple[str, str]] = set()

    def sample() -> None:
        gauge = families().queued
        now = dict(source())
        for key in seen - now.keys():
            gauge.labels(*key).set(0)
        for key, waiting in now.items():
            gauge.labels(*key).set(waiting)
        seen.clear()
        seen.update(now)

    add_sampler(sample)
    return sample


def watch_jobs(counts: JobCounts) -> Sampler:
    """Sample ``counts()``, {"queued": n, "running": m}, into ``modelapi_jobs_queued`` / ``_running`` (a
    database query: run on a thread)."""

    def sample() -> None:
        now = counts()
        f = families()
        f.jobs_queued.set(now.get("queued", 0))
        f.jobs_running.set(now.get("running", 0))

    add_sampler(sample, blocking=True)
    return sample


def queued_in(repository: Repository) -> QueueSource:
    """{(model, version): waiting} for every serving version with a batcher (read on the event loop)."""

    def source() -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for name in repository.names():
            try:
                entry = repository.entry(name)
            except ModelNotFound:  # gone meanwhile
                continue
            for version, handle in entry.serving.items():
                if handle.batcher is not None:
                    out[(name, version)] = handle.batcher.waiting
        return out

    return source


def job_counts(store: JobStore) -> JobCounts:
    """{"queued": n, "running": m} from the jobs table, in one query."""
    from sqlalchemy import func, select

    from ..jobs.store import QUEUED, RUNNING, jobs

    query = select(jobs.c.state, func.count()).where(jobs.c.state.in_([QUEUED, RUNNING])).group_by(jobs.c.state)

    def counts() -> dict[str, int]:
        with store.engine.connect() as conn:
            return {str(state): int(n) for state, n in conn.execute(query)}

    return counts


def _run(sampler: Sampler) -> None:
    try:
        sampler()
    except Exception:
        log.warning("metrics sampler %s failed", getattr(sampler, "__qualname__", sampler), exc_info=True)


def refresh() -> None:
    """Flush the observers and run every sampler now, on this thread (tests, or a caller without a loop)."""
    flush()
    _run(sample_process)
    for sampler, _blocking in list(_samplers):
        _run(sampler)


async def refresh_async() -> None:
    """Flush the observers and run every sampler: the quick ones on the event loop, the blocking ones on a
    thread."""
    flush()
    _run(sample_process)
    for sampler, blocking in list(_samplers):
        if blocking:
            await asyncio.to_thread(_run, sampler)
        else:
            _run(sampler)


async def sample_forever(interval_s: float = 1.0) -> None:
    """Refresh every ``interval_s`` until cancelled (start it as a task in each worker)."""
    while True:
        await refresh_async()
        await asyncio.sleep(interval_s)
