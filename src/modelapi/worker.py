"""``modelapi worker``: an RQ worker process that loads the models and runs jobs from Redis.

It runs jobs in its own process (RQ's ``SimpleWorker``: no fork per job, the models stay loaded), on one event
loop in a background thread, through the same data plane as the server. At start and then every half lease it
frees the jobs of dead workers and re-sends jobs that have no live message, so killing a worker loses nothing.
A job's rows are charged to the row limits of the key that submitted it, read from the same key store as the
servers' and counted in the same Redis (``jobs/quota.py``).

With ``--metrics-port PORT`` the worker counts what it does with the server's ``MetricsObserver`` (subscribed to
its data plane's events, and the job service's observer) and serves its own ``GET /metrics`` and health routes
on that port of ``--host``, with the operations port's server (``http/ops.py``) on the jobs' event loop: the
rows and the succeeded and failed jobs it ran are counted there and nowhere else, so Prometheus scrapes every
worker as it scrapes every server, and ``sum()`` over all of them counts each job once (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from . import logs, metrics, tracing
from .dataplane import DataPlane
from .jobs import rq_runner
from .jobs.quota import RowQuota
from .jobs.runner import maintain, worker_id
from .jobs.service import JobService
from .security.keys import KeyStore
from .security.meter import Meter, meter_for
from .settings import Settings

if TYPE_CHECKING:
    from .http.ops import Server as OpsServer

log = logging.getLogger("modelapi.jobs")
#: sampled by the servers from the jobs database; a worker's would be a second, idle copy of them
SERVERS_ONLY = ("modelapi_jobs_queued", "modelapi_jobs_running")


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    logs.configure(settings)
    tracing.configure(settings)  # job chunks traced as in the server (docs/observability.md#traces)
    if not settings.redis_url:
        raise ValueError("modelapi worker needs a Redis URL: --redis-url URL or MODELAPI_REDIS_URL")
    if not settings.database_url:
        log.warning("no database URL: using SQLite in %s, which only workers on this machine share", settings.state_dir)
    # bound first: a port in use stops the worker before it loads anything
    ops_socket = None if settings.worker_metrics_port is None else _bind(settings.host, settings.worker_metrics_port)
    dataplane = DataPlane.from_settings(settings)  # the same data plane as the server, without a web app
    observer = _observe(settings, dataplane)  # before the models load: their loads and states are counted
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="modelapi-jobs-loop", daemon=True).start()
    asyncio.run_coroutine_threadsafe(dataplane.start(), loop).result()
    service = JobService(dataplane, settings)
    if observer is not None:
        service.observer = observer  # rows committed and jobs ended, counted in this process
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
    ops = None
    if ops_socket is not None:
        health = _health(dataplane, stop)
        ops = asyncio.run_coroutine_threadsafe(_serve_ops(ops_socket, health), loop).result()
        host, port = ops_socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("worker %s: GET /metrics and the health routes on http://%s:%d", me, shown, port)
    try:
        worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer)
        worker.work(burst=burst, logging_level=settings.log_level.upper())
    finally:
        stop.set()
        service.store().release(me)
        asyncio.run_coroutine_threadsafe(dataplane.close(), loop).result()
        asyncio.run_coroutine_threadsafe(meter.close(), loop).result()
        if ops is not None:
            asyncio.run_coroutine_threadsafe(ops.stop(), loop).result()
        if ops_socket is not None:
            ops_socket.close()
        loop.call_soon_threadsafe(loop.stop)
        service.close()
        keys.close()
        tracing.shutdown()


async def _meter(redis_url: str) -> Meter:
    """The meter, made on the jobs' event loop, whose Redis connections it uses."""
    return meter_for(redis_url)


def _observe(settings: Settings, dataplane: DataPlane) -> metrics.MetricsObserver | None:
    """With ``--metrics-port``: this process's own metrics (the jobs gauges left to the servers) and, unless
    ``--no-metrics``, the server's observer on the data plane's events; the caller hands it to the job service."""
    if settings.worker_metrics_port is None:
        return None
    metrics.setup(None, hide=SERVERS_ONLY)
    if not settings.metrics:
        return None
    observer = metrics.MetricsObserver()
    dataplane.events.subscribe(observer)
    metrics.watch_queues(metrics.queued_in(dataplane.repository))  # sampled on the loop, before each scrape
    return observer


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _health(dataplane: DataPlane, stopping: threading.Event) -> Callable[[str], tuple[int, dict[str, bool]] | None]:
    """The health routes as the operations port answers them: live while the process runs; ready while the models
    are loaded and the worker takes jobs (not once it stops)."""
    from .http.lifecycle import LIVE_PATH, READY_PATH

    def health(path: str) -> tuple[int, dict[str, bool]] | None:
        if path == LIVE_PATH:
            return 200, {"live": True}
        if path == READY_PATH:
            ready = dataplane.ready and not stopping.is_set()
            return (200 if ready else 503), {"ready": ready}
        return None

    return health


async def _serve_ops(sock: socket.socket, health: Callable[[str], tuple[int, dict[str, bool]] | None]) -> OpsServer:
    from .http import ops

    return await ops.serve(sock, health)
