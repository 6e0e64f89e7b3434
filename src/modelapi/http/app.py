"""Assembly: routes, middleware, exception handlers and lifespan around one data plane."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from ..dataplane import DataPlane
from ..errors import ModelAPIError
from ..models.base import Model
from ..settings import Settings
from ..jobs.host import JobsHost
from . import docs, openapi, routes_jobs, routes_mlflow, routes_rest, routes_v2
from .errors import handle_http_exception, handle_modelapi_error
from .middleware import RequestContextMiddleware


def create_app(models: Sequence[Model] | DataPlane, settings: Settings | None = None) -> Starlette:
    """The ASGI application serving ``models``. Models load in the lifespan startup, before readiness."""
    settings = settings or Settings()
    dataplane = (
        models
        if isinstance(models, DataPlane)
        else DataPlane(
            models,
            max_rows=settings.max_rows,
            batching=settings.batch_policy(),
            batch_overrides=settings.batch_overrides(),
        )
    )

    jobs = JobsHost(dataplane, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(dataplane.load_all)
        await jobs.start()  # in-process job workers resume unfinished jobs (or dispatch to RQ)
        try:
            yield
        finally:
            await jobs.stop()
            dataplane.live = False
            await run_in_threadpool(dataplane.unload_all)

    app = Starlette(
        routes=[*routes_v2.routes(), *routes_rest.routes(), *openapi.routes(), *docs.routes(), *routes_jobs.routes()],
        middleware=[Middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)],
        exception_handlers={ModelAPIError: handle_modelapi_error, HTTPException: handle_http_exception},
        lifespan=lifespan,
    )
    app.router.routes.extend(routes_mlflow.routes())  # MLflow scoring-server routes (/invocations, /ping)
    app.state.dataplane = dataplane
    app.state.settings = settings
    app.state.jobs = jobs
    return app
