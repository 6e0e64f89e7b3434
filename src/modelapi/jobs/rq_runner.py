"""Scale-out: jobs travel through Redis to RQ workers (``modelapi worker``); the database stays the truth.

A Redis message only says "run job X". The worker claims X in the database under a lease and commits chunk by
chunk exactly as an in-process worker does, so a message delivered twice runs nothing twice, and a message lost
(Redis restarted, a worker killed mid-job) is sent again: maintenance re-sends every job that is running under
an expired lease, or queued with no live message. Messages are JSON (RQ's JSON serializer), never pickle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from .service import JobService
from .store import JobRecord

log = logging.getLogger("modelapi.jobs")
JOB_FUNCTION = "modelapi.jobs.rq_runner.run_job"
JOB_TIMEOUT_S = 30 * 24 * 3600  # RQ's own limit on one job; the lease is what notices a dead worker
_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def connect(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


def make_queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def message_id(job: JobRecord) -> str:
    """One message per attempt: a claim counts an attempt, so a dead worker's message is never reused."""
    return f"modelapi-{job.id}-{job.attempts}"


class Dispatcher:
    def __init__(self, service: JobService, queue: Queue) -> None:
        self.service = service
        self.queue = queue

    def send(self, job: JobRecord) -> None:
        rq_id = message_id(job)
        try:
            old = Job.fetch(rq_id, connection=self.queue.connection, serializer=JSONSerializer)
        except Exception:  # rq raises NoSuchJobError, or a decode error for a foreign payload
            old = None
        if old is not None:
            if old.get_status() in _LIVE:
                return
            old.delete()
        self.queue.enqueue_call(
            JOB_FUNCTION, args=(job.id,), job_id=rq_id, timeout=JOB_TIMEOUT_S, result_ttl=0, failure_ttl=86400
        )
        self.service.store().mark_enqueued(job.id)

    def redeliver(self) -> int:
        """Send again every job that needs a worker and may have no message; returns how many were looked at."""
        stale = time.time() - self.service.settings.job_lease_s
        jobs = self.service.store().needing_enqueue(stale)
        for job in jobs:
            self.send(job)
        return len(jobs)


# the worker side ------------------------------------------------------------------------------------------
@dataclass
class _Context:
    service: JobService
    loop: asyncio.AbstractEventLoop
    worker: str


_context: _Context | None = None


def install(service: JobService, loop: asyncio.AbstractEventLoop, worker: str) -> None:
    """Make ``run_job`` run jobs with this service, on this event loop (running in another thread)."""
    global _context
    _context = _Context(service, loop, worker)


def run_job(job_id: str) -> None:
    """The function RQ calls (by name) in a ``modelapi worker`` process."""
    if _context is None:
        raise RuntimeError("modelapi jobs run in `modelapi worker` processes, which load the models first")
    future = asyncio.run_coroutine_threadsafe(_context.service.run(job_id, _context.worker), _context.loop)
    job = future.result()
    if job is None:
        log.info("job %s: nothing to do (finished, cancelled, or held by a live worker)", job_id)
