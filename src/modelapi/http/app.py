"""Assembly: routes, middleware, exception handlers and lifespan around one data plane."""

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
from ..repository.shared import SharedState
from ..security.auth import Auth, AuthMiddleware, without_management
from ..security.limits import rate_limit
from ..settings import Settings
from . import docs, openapi, routes_jobs, routes_mlflow, routes_rest, routes_v2
from .errors import handle_http_exception, handle_modelapi_error
from .middleware import cors, request_context

_INFERENCE_ROUTES = {
    "infer",
    "predict",
    "predict_version",
    "predict_label",
    "predict_default",
    "v1_predict",
    "v1_predict_version",
    "v1_predict_label",
}


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

    routes = [
        *without_management(routes_v2.routes(), enabled=settings.management_routes),
        *routes_rest.routes(),
        *openapi.routes(),
        *docs.routes(),
        *routes_jobs.routes(),
    ]
    # the router tries routes in order: inference routes first (no other route matches their paths)
    routes.sort(key=lambda route: getattr(route, "name", None) not in _INFERENCE_ROUTES)
    app = Starlette(
        routes=routes,
        middleware=[
            request_context(settings),  # request id, headers, body and request limits (docs/security.md)
            *cors(settings),  # outside authentication: a browser's preflight carries no key
            Middleware(
                AuthMiddleware, auth=auth, management=settings.management_routes
            ),  # inside the request context: its 401s carry the request id
            rate_limit(settings.rate_limit, settings.rate_burst),  # inside authentication, which names the key
        ],
        exception_handlers={ModelAPIError: handle_modelapi_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    app.router.routes.extend(routes_mlflow.routes())  # MLflow scoring-server routes (/invocations, /ping)
    app.state.dataplane = dataplane
    app.state.settings = settings
    app.state.jobs = jobs
    app.state.auth = auth
    return app
