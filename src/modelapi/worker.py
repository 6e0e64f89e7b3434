"""``modelapi worker``: an RQ worker process that loads the models and runs jobs from Redis.

It runs jobs in its own process (RQ's ``SimpleWorker``: no fork per job, the models stay loaded), on one event
loop in a background thread, through the same data plane as the server. At start and then every half lease it
frees the jobs of dead workers and re-sends jobs that have no live message, so killing a worker loses nothing.
A job's rows are charged to the row limits of the key that submitted it, read from the same key store as the
servers' and counted in the same Redis (``jobs/quota.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from . import logs, tracing
from .dataplane import DataPlane
from .jobs import rq_runner
from .jobs.quota import RowQuota
from .jobs.runner import maintain, worker_id
from .jobs.service import JobService
from .security.keys import KeyStore
from .security.meter import Meter, meter_for
from .settings import Settings

log = logging.getLogger("modelapi.jobs")


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    logs.configure(settings)
    tracing.configure(settings)  # job chunks traced as in the server (docs/observability.md#traces)
    if not settings.redis_url:
        raise ValueError("modelapi worker needs a Redis URL: --redis-url URL or MODELAPI_REDIS_URL")
    if not settings.database_url:
        log.warning("no database URL: using SQLite in %s, which only workers on this machine share", settings.state_dir)
    dataplane = DataPlane.from_settings(settings)  # the same data plane as the server, without a web app
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="modelapi-jobs-loop", daemon=True).start()
    asyncio.run_coroutine_threadsafe(dataplane.start(), loop).result()
    service = JobService(dataplane, settings)
    # a job that has an owner was submitted with authentication on: the servers' key store says its limits
    keys = KeyStore.open(settings.state_dir, settings.database_url, cache_s=settings.key_cache_s)
    meter = asyncio.run_coroutine_threadsafe(_meter(settings.redis_url), loop).result()
    service.quota = RowQuota(keys, meter)
    me = worker_id("rq")
    rq_runner.install(service, loop, me)
    redis = rq_runner.connect(settings.redis_url)
    queue = rq_runner.make_queue(redis, settings.job_queue)
    dispatcher = rq_runner.Dispatcher(service, queue)
    stop = threading.Event()

    def maintenance() -> None:
        while True:
            try:
                maintain(service.store(), settings.job_retention_s)
                dispatcher.redeliver()
            except Exception:
                log.exception("job maintenance failed (database or Redis unreachable?)")
            if stop.wait(min(60.0, settings.job_lease_s / 2)):
                return

    maintain(service.store(), settings.job_retention_s)
    dispatcher.redeliver()
    threading.Thread(target=maintenance, name="modelapi-jobs-maintenance", daemon=True).start()
    log.info("worker %s: models %s, queue %r", me, ", ".join(dataplane.repository.ready_names()), settings.job_queue)
    try:
        worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer)
        worker.work(burst=burst, logging_level=settings.log_level.upper())
    finally:
        stop.set()
        service.store().release(me)
        asyncio.run_coroutine_threadsafe(dataplane.close(), loop).result()
        asyncio.run_coroutine_threadsafe(meter.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        service.close()
        keys.close()
        tracing.shutdown()


async def _meter(redis_url: str) -> Meter:
    """The meter, made on the jobs' event loop, whose Redis connections it uses."""
    return meter_for(redis_url)
