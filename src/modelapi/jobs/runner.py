"""In-process job workers: asyncio tasks in the server that claim jobs from the database and run them.

Every worker holds a lease on its job, renewed while it runs. A job whose lease ran out, or whose worker was a
process on this host that no longer exists (a server killed with kill -9), is resumed by the next worker to
look, from its first uncommitted chunk. Maintenance also deletes finished jobs older than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from .service import JobService
from .store import JobRecord, JobStore

log = logging.getLogger("modelapi.jobs")
POLL_S = 1.0


def worker_id(kind: str) -> str:
    """``host:pid:random:kind``: the host and pid let a process on the same host see that the worker died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{kind}"


def dead_owners(owners: list[str]) -> list[str]:
    """The lease owners that were processes on this host and exist no more."""
    host = socket.gethostname()
    dead = []
    for owner in owners:
        parts = owner.split(":")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            dead.append(owner)
        except PermissionError:
            pass  # alive, someone else's
    return dead


def maintain(store: JobStore, retention_s: float) -> None:
    """Free the jobs of dead local workers at once, and delete expired jobs."""
    freed = store.expire_leases(dead_owners(store.lease_owners()))
    if freed:
        log.warning("resuming %d job(s) of a worker that died", freed)
    purged = store.purge(time.time() - retention_s)
    if purged:
        log.info("deleted %d finished job(s) older than the retention", purged)


class LocalRunner:
    def __init__(self, service: JobService, workers: int) -> None:
        self.service = service
        self.workers = [worker_id(f"local{i}") for i in range(workers)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.service.notify = self._notify
        if self.service.has_store():
            self._start_tasks()

    def _start_tasks(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._maintenance()))
        self._tasks.extend(asyncio.create_task(self._work(w)) for w in self.workers)

    def _notify(self, job: JobRecord) -> None:
        """Called from the thread that stored the job."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        self._start_tasks()
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.service.has_store():
            store = self.service.store()
            for worker in self.workers:
                await asyncio.to_thread(store.release, worker)

    async def _work(self, worker: str) -> None:
        while True:
            self._wake.clear()
            try:
                job = await self.service.run(None, worker)
            except Exception:
                log.exception("job worker %s: cannot reach the jobs database", worker)
                job = None
            if job is None:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that comes as the wake-up
                # does (maintenance sets it each lease/2), and this loop then ran on, holding stop() for ever
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()

    async def _maintenance(self) -> None:
        store = self.service.store()
        settings = self.service.settings
        while True:
            try:
                await asyncio.to_thread(maintain, store, settings.job_retention_s)
            except Exception:
                log.exception("job maintenance failed")
            self._wake.set()
            await asyncio.sleep(min(60.0, settings.job_lease_s / 2))
