"""Readiness around the whole app: starting (models loading) -> serving -> draining (shutting down).

``Lifecycle`` is the outermost ASGI app. It builds the real app (which loads the models) in a worker thread and
then runs that app's own lifespan, so that the server can already answer while models load:

- starting: ``/v2/health/live`` answers 200, ``/v2/health/ready`` 503, every other route 503 with
  ``Retry-After``;
- serving: everything goes to the app (whose readiness route checks the models);
- draining (after SIGTERM): ``/v2/health/ready`` answers 503; requests still arriving on open connections are
  served, because the server is finishing in-flight work;
- failed (the app could not be built or started): 503 until the server has stopped.

With ``background_startup=False`` the server does not start accepting until the app has started (used by
replacement workers, so that a restart never turns requests away while the other workers can serve them).

``health`` gives the same answers to the health routes for the operations port (``--metrics-port``,
``http/ops.py``), which serves them without the app from its own listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import jsonutil
from .errors import error_response
from .fastpath import App

log = logging.getLogger("modelapi")

LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
State = Literal["starting", "serving", "draining", "failed"]
_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


class Lifecycle:
    def __init__(
        self,
        build: Callable[[], Starlette],
        *,
        background_startup: bool = True,
        cluster_ready: Callable[[], bool] = lambda: True,
        on_ready: Callable[[Starlette], None] = lambda app: None,
        on_failed: Callable[[BaseException], None] = lambda exc: None,
        prepare: Callable[[Starlette], Awaitable[None]] | None = None,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._build = build
        self._prepare = prepare
        #: awaited once shutdown begins, before the app's own shutdown (the gRPC server finishing its calls)
        self._before_shutdown = before_shutdown
        self.background_startup = background_startup
        self._cluster_ready = cluster_ready
        self._on_ready = on_ready
        self._on_failed = on_failed
        self.state: State = "starting"
        self.app: Starlette | None = None
        #: ``App.entry`` of the app once it serves (``None`` for another Starlette app: it is awaited whole)
        self._entry: Callable[[Scope], ASGIApp] | None = None
        self.error: BaseException | None = None
        self._listening = False
        self._started = False
        self._announced = False

    # what the server tells us -----------------------------------------------------------------------------
    def listening(self) -> None:
        """The server accepts connections now; readiness is announced once the app has started too."""
        self._listening = True
        self._announce()

    def drain(self) -> None:
        """Shutdown began: report not-ready from now on."""
        if self.state in ("starting", "serving"):
            self.state = "draining"

    @property
    def ready(self) -> bool:
        return self.state == "serving" and self._cluster_ready()

    def health(self, path: str) -> tuple[int, dict[str, bool]] | None:
        """The status and body the main port gives ``path`` now if it is a health route, else None: for the
        operations port (``http/ops.py``), which answers without the app. The same decisions as ``__call__``
        and, once the app serves, as the V2 routes (``protocols/v2/routes.py``) behind it; but live while
        draining, also once the app's shutdown has closed the data plane: the main port, closed by then, never
        answers that."""
        if path == READY_PATH:
            ready = self.ready and self.app is not None and self.app.state.dataplane.ready
            return (200 if ready else 503), {"ready": ready}
        if path == LIVE_PATH:
            # draining, the process still answers: this port outlasts the drain and the app's own shutdown, which
            # closes the data plane (its ``live`` False) while the main port no longer answers anything
            if self.state in ("starting", "failed", "draining") or self.app is None:
                return 200, {"live": True}
            live = bool(self.app.state.dataplane.live)
            return (200 if live else 503), {"live": live}
        return None

    def _announce(self) -> None:
        if self._listening and self._started and not self._announced and self.app is not None:
            self._announced = True
            self._on_ready(self.app)

    # ASGI -------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] == "http":
            path = scope["path"]
            if path == READY_PATH and not self.ready:
                await _json(scope, receive, send, 503, {"ready": False})
                return
            if self.state in ("starting", "failed") or self.app is None:
                if path == LIVE_PATH:
                    await _json(scope, receive, send, 200, {"live": True})
                    return
                detail = (
                    "the server is starting: models are loading"
                    if self.state == "starting"
                    else "the server failed to start"
                )
                response = error_response(
                    Request(scope), 503, "Service Unavailable", detail, {**_HEADERS, "retry-after": "1"}
                )
                await response(scope, receive, send)
                return
        entry = self._entry
        if entry is not None:  # modelapi's app: the stack that serves the scope, awaited here (http/fastpath.App)
            await entry(scope)(scope, receive, send)
            return
        assert self.app is not None
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = _InnerLifespan(scope)
        message = await receive()
        assert message["type"] == "lifespan.startup", message
        if self.background_startup:
            await send({"type": "lifespan.startup.complete"})
            starting = asyncio.create_task(self._start(inner))
        else:
            await self._start(inner)
            if self.error is not None:
                await send({"type": "lifespan.startup.failed", "message": str(self.error)})
                raise self.error  # the server reported the failure and stops; ASGI servers expect the raise
            await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown", message
        self.drain()
        if self.background_startup and not starting.done():
            starting.cancel()  # a model still loading: nothing to shut down but the waiting task
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        if self._before_shutdown is not None:
            await self._before_shutdown()
        failure = await inner.shutdown() if self._started else None
        if failure is None:
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "lifespan.shutdown.failed", "message": failure})

    async def _start(self, inner: _InnerLifespan) -> None:
        try:
            app = await run_in_threadpool(self._build)
            if self._prepare is not None:  # e.g. load the models: their errors arrive as raised, not as text
                await self._prepare(app)
            failure = await inner.startup(app)
            if failure is not None:
                raise RuntimeError(f"application startup failed: {failure}")
        except Exception as exc:  # reported to the server, which stops
            self.state = "failed"
            self.error = exc
            self._on_failed(exc)
            return
        self.app = app
        self._entry = app.entry if isinstance(app, App) else None
        self._started = True
        if self.state == "starting":
            self.state = "serving"
        self._announce()


class _InnerLifespan:
    """Runs the built app's own ASGI lifespan as a task, speaking to it through two queues."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self, app: ASGIApp) -> str | None:
        """None when the app started, else why it did not."""

        async def run() -> None:
            await app(self.scope, self.to_app.get, self.from_app.put)

        self.task = asyncio.create_task(run())
        await self.to_app.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is None or reply["type"] == "lifespan.startup.complete":
            return None  # an app without lifespan support has nothing to start
        return str(reply.get("message") or "no reason given")

    async def shutdown(self) -> str | None:
        await self.to_app.put({"type": "lifespan.shutdown"})
        reply = await self._reply()
        if reply is None or reply["type"] == "lifespan.shutdown.complete":
            return None
        return str(reply.get("message") or "no reason given")

    async def _reply(self) -> Message | None:
        assert self.task is not None
        getter = asyncio.ensure_future(self.from_app.get())
        done, _ = await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        exc = self.task.exception()
        if exc is not None:
            return {"type": "lifespan.failed", "message": f"{type(exc).__name__}: {exc}"}
        return None


async def _json(scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                *((k.encode(), v.encode()) for k, v in _HEADERS.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": jsonutil.dumps(body)})
