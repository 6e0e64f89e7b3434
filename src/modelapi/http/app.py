"""Assembly: the registered protocols' routes over one ``Services``, middleware, exception handlers, lifespan.

This is the one place that builds the services and the one place that touches ``app.state``: it leaves the
services there for the process that runs the app (``server.py`` waits on the data plane) and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from .. import metrics, tracing
from ..dataplane import DataPlane
from ..errors import ModelAPIError
from ..heap import HeapFreezer
from ..jobs.host import JobsHost
from ..jobs.quota import RowQuota
from ..models.base import Model
from ..monitor.service import Monitor
from ..protocols import registered
from ..repository.shared import SharedState
from ..security.auth import Auth, AuthMiddleware, PublicPaths
from ..security.limits import KeyLimits, rate_limit
from ..security.meter import meter_for
from ..settings import Settings
from .errors import handle_http_exception, handle_modelapi_error
from .fastpath import App, fast_routes
from .holds import RetryHolds
from .middleware import cors, request_context
from .pacing import Pacing
from .rejections import REPORTER
from .routing import body_limits, guard
from .services import Services
from .shedding import Shedding
from .tracing import tracing_middleware


def create_app(
    models: Sequence[Model] | DataPlane | None = None,
    settings: Settings | None = None,
    *,
    shared: SharedState | None = None,
    freeze_heap: bool = False,
    shedding: Shedding | None = None,
    pacing: Pacing | None = None,
) -> Starlette:
    """The ASGI application serving ``models`` (models built in Python, a data plane, or ``None``: what
    ``settings`` names). Models load in the lifespan startup, before readiness. ``shared``: the workers' shared
    repository state, with ``--workers N``. ``freeze_heap``: the process is the server's worker, whose heap
    ``heap.HeapFreezer`` freezes once models load (not for an app embedded in another program, whose heap is
    that program's). ``shedding``: the server's HTTP protocol's refusals on the head under overload
    (``http/shedding.py``), bound here to this app's data plane and inference routes, unless tracing is on.
    ``pacing``: the server's HTTP protocol's pacing of heads under a flood (``http/pacing.py``), bound here to the
    tightest queue budget of this app's ready versions."""
    settings = settings or Settings()
    tracing.configure(settings)  # per worker, after any fork: the SDK's export thread is per process
    if isinstance(models, DataPlane):
        dataplane = models
    else:
        dataplane = DataPlane.from_settings(settings, models=models, shared=shared)

    jobs = JobsHost(dataplane, settings)
    auth = Auth.from_settings(settings)  # per worker, after any fork: each opens its own key-store connections
    meter = meter_for(settings.redis_url) if auth.enabled else None  # per-key limits: shared with Redis
    limits = KeyLimits(settings.rate_limit, settings.rate_burst, meter, dataplane.events)
    if auth.store is not None and meter is not None:  # jobs run here charge their rows as requests do
        jobs.service.quota = RowQuota(auth.store, meter)
    monitor = Monitor.from_settings(settings)  # reads the log for GET /models/{name}/monitor, logging or not
    services = Services(dataplane, settings, jobs, auth, limits, monitor)
    # before the models load, as are the subscribers below: the repository emits their state changes while they do
    heap = HeapFreezer() if freeze_heap else None  # full collections walk only what came after (heap.py)
    if heap is not None:
        dataplane.events.subscribe(heap)
    if settings.metrics:
        observer = metrics.MetricsObserver()
        dataplane.events.subscribe(observer)
        jobs.service.observer = observer
    # the prediction log subscribes only when a model logs (docs/monitoring.md); before the models load too
    monitor.start(dataplane.events, metrics.families() if settings.metrics else None)

    def job_counts() -> Mapping[str, int]:
        if not jobs.service.has_store():  # no jobs database yet: do not create one to count nothing
            return {}
        return metrics.job_counts(jobs.service.store())()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        samplers = []
        sampling = None
        if settings.metrics:
            samplers = [metrics.watch_queues(metrics.queued_in(dataplane.repository)), metrics.watch_jobs(job_counts)]
            sampling = loop.create_task(metrics.sample_forever())
        try:
            await dataplane.start()
            follow = loop.create_task(dataplane.repository.follow(watch=settings.watch))
            await jobs.start()  # in-process job workers resume unfinished jobs (or dispatch to RQ)
            try:
                yield
            finally:
                follow.cancel()
                if heap is not None:
                    heap.close()
                await jobs.stop()
                auth.close()
                if meter is not None:
                    await meter.close()
                await dataplane.close()
                await asyncio.to_thread(monitor.stop)  # what waits is written once no call can add more
        finally:
            if sampling is not None:
                sampling.cancel()
            for sampler in samplers:
                metrics.remove_sampler(sampler)
            metrics.flush()
            # the last second's refusals wait for a timer that a closing loop never runs: written now
            REPORTER.flush()
            tracing.shutdown()  # what configure() built: the last spans are exported

    owned = [(route, protocol) for protocol in registered() for route in protocol.routes(services)]
    routes = [route for route, _ in owned]
    # the router tries routes in order: inference routes first (no other route matches their paths)
    routes.sort(key=lambda route: not getattr(route, "inference", False))
    # held early retries are released early only into room the data plane has (http/holds.py)
    holds = RetryHolds(room=lambda: dataplane.shed() is None) if settings.hold_early_retries else None
    if shedding is not None:
        shedding.stop_holds(holds)  # answered when the server stops, not at their Retry-After
        shedding.places_in(dataplane.gate)  # a refused client's connection closed: its place is free
    if pacing is not None:  # the order of heads under a flood turns by the budgets of this app's models
        pacing.follow(dataplane.tightest_queue_s)
    # the routes FastPath dispatches: those the protocol may refuse on the head; none while tracing, so that every
    # request keeps its server span and its traceresponse (the middleware's, which a refusal there would skip)
    if shedding is not None and not tracing.ON:
        protocol_of = {id(route): protocol.name for route, protocol in owned}
        shed = [(r.path, protocol_of[id(r)], r.error_style) for r in fast_routes(routes)]
        shedding.bind(
            dataplane,
            shed,
            holds,
            private=auth.enabled,
            cors=bool(settings.cors_origins),
            max_body_bytes=settings.max_body_bytes,
            access_log_refusals_per_s=settings.access_log_refusals_per_s,
        )
    app = App(  # Starlette, the inference routes dispatched directly (http/fastpath.py)
        routes=guard(routes, dataplane.repository),  # a key's model list, from each matched route's {name}
        middleware=[
            *tracing_middleware(),  # outermost: the server span is current for the access log line too
            # request id, headers, body limits (docs/security.md), job uploads' own limit
            request_context(settings, dataplane.events, body_limits(routes), holds),
            *cors(settings),  # outside authentication: a browser's preflight carries no key
            Middleware(  # inside the request context: its 401s carry the request id
                AuthMiddleware,
                auth=auth,
                management=settings.management_routes,
                admin_paths=frozenset(path for protocol in registered() for path in protocol.admin_paths),
                public_paths=PublicPaths(path for protocol in registered() for path in protocol.public_paths),
                events=dataplane.events,
            ),
            # inside authentication, which names the key
            rate_limit(limits),
        ],
        exception_handlers={ModelAPIError: handle_modelapi_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    # for the server process (readiness, banner) and tests, which hold the app; no route reads these
    app.state.services = services
    app.state.dataplane = dataplane
    return app
