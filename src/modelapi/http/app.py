"""Assembly: the registered protocols' routes over one ``Services``, middleware, exception handlers, lifespan.

This is the one place that builds the services and the one place that touches ``app.state``: it leaves the
services there for the process that runs the app (``server.py`` waits on the data plane) and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from ..dataplane import DataPlane
from ..errors import ModelAPIError
from ..jobs.host import JobsHost
from ..models.base import Model
from ..protocols import registered
from ..repository.shared import SharedState
from ..security.auth import Auth, AuthMiddleware
from ..security.limits import rate_limit
from ..settings import Settings
from .errors import handle_http_exception, handle_modelapi_error
from .middleware import cors, request_context
from .routing import guard
from .services import Services


def create_app(
    models: Sequence[Model] | DataPlane | None = None,
    settings: Settings | None = None,
    *,
    shared: SharedState | None = None,
) -> Starlette:
    """The ASGI application serving ``models`` (models built in Python, a data plane, or ``None``: what
    ``settings`` names). Models load in the lifespan startup, before readiness. ``shared``: the workers' shared
    repository state, with ``--workers N``."""
    settings = settings or Settings()
    if isinstance(models, DataPlane):
        dataplane = models
    else:
        dataplane = DataPlane.from_settings(settings, models=models, shared=shared)

    jobs = JobsHost(dataplane, settings)
    auth = Auth.from_settings(settings)  # per worker, after any fork: each opens its own key-store connections
    services = Services(dataplane, settings, jobs, auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await dataplane.start()
        follow = asyncio.get_running_loop().create_task(dataplane.repository.follow(watch=settings.watch))
        await jobs.start()  # in-process job workers resume unfinished jobs (or dispatch to RQ)
        try:
            yield
        finally:
            follow.cancel()
            await jobs.stop()
            auth.close()
            await dataplane.close()

    routes = [route for protocol in registered() for route in protocol.routes(services)]
    # the router tries routes in order: inference routes first (no other route matches their paths)
    routes.sort(key=lambda route: not getattr(route, "inference", False))
    app = Starlette(
        routes=guard(routes, dataplane.repository),  # a key's model list, from each matched route's {name}
        middleware=[
            request_context(settings),  # request id, headers, body limits (docs/security.md)
            *cors(settings),  # outside authentication: a browser's preflight carries no key
            Middleware(
                AuthMiddleware, auth=auth, management=settings.management_routes
            ),  # inside the request context: its 401s carry the request id
            rate_limit(settings.rate_limit, settings.rate_burst),  # inside authentication, which names the key
        ],
        exception_handlers={ModelAPIError: handle_modelapi_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    # for the server process (readiness, banner) and tests, which hold the app; no route reads these
    app.state.services = services
    app.state.dataplane = dataplane
    return app
