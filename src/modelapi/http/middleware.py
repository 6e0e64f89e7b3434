"""Per-request context as one pure ASGI middleware: request id, standard headers, body limits.

- Every response gets ``X-Request-ID``, ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff`` and a
  Content-Security-Policy that lets a browser do nothing with it (``default-src 'none'; frame-ancestors
  'none'``) unless the route set its own (the docs page does); over TLS, ``Strict-Transport-Security`` too.
- The body-size limit is counted while the body streams in, so a client that lies in ``Content-Length`` gains
  nothing (413). It is ``max_body_bytes``, except on a route that carries its own (``BODY_LIMIT`` in the scope,
  put there by ``http/routing.ProtocolRoute``: job uploads, ``max_upload_bytes``). A declared length over the
  limit is refused before routing (the upload routes' paths are matched only for a length over
  ``max_body_bytes``), so such a request spends no rate-limit token.
  The whole body must arrive within ``body_timeout_s`` of the request's headers, so a client that trickles or
  stalls cannot hold the request open (408; uvicorn itself has no body-read timeout).
- The access log (``modelapi.access``) is written here, once the response has ended, and every log record
  written while the request is served carries its id (``logs.CONTEXT``).
- A request that retries a 503 on the same connection and path before its ``Retry-After`` is held until then, or
  until the server is about to run out of work, which a request ending here checks, and then answered 503 with
  ``Retry-After: 0``, never run (``http/holds.py``).
- JSON limits are not set here: routes pass the server's (``http/services.py``) to the codecs explicitly.

Errors raised outside the routes (a ``ModelAPIError`` from an inner middleware, or a crash) are rendered here,
so even those carry the request id.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import operator
import re
import time
from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import EarlyRetry, ModelAPIError, PayloadTooLarge, RequestTimeout
from ..events import Events, RequestRejected
from ..logs import CONTEXT
from ..security.slow_clients import BODY_IN, IN_PROGRESS, REFUSED
from ..settings import Settings
from .access import ACCESS_LOG, access_line, scan_headers
from .errors import BODY_LIMIT, ERROR_VERSION, error_response, handle_modelapi_error, handle_unexpected
from .holds import RetryHolds, connection
from .rejections import REPORTER

log = logging.getLogger("modelapi")
#: the scope's seconds a retry was held before its answer (``_HeldAnswer``)
HELD = "modelapi.held"
CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"
_STANDARD_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", CSP),
]
STANDARD_RAW = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in _STANDARD_HEADERS]
_STANDARD_NAMES = frozenset(key for key, _ in STANDARD_RAW)
_HSTS_RAW = (b"strict-transport-security", HSTS.encode("latin-1"))
_NAME = operator.itemgetter(0)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float = 60.0,
        events: Events | None = None,
        uploads: Sequence[tuple[re.Pattern[str], int]] = (),
        holds: RetryHolds | None = None,
        cors: Sequence[Middleware] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = tuple(uploads)
        self.body_timeout_s = body_timeout_s
        self.events = events
        self.holds = holds
        # a held retry's answer goes through CORS as any answer does, so that a browser may read it
        held: ASGIApp = _HeldAnswer(events)
        for middleware in reversed(cors):
            cls, args, kwargs = middleware
            held = cls(held, *args, **kwargs)
        self.held_answer = held

    def _too_large(self) -> None:
        if self.events is not None and self.events.active:
            self.events.request_rejected(RequestRejected(None, "http", "body_size", 413))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, declared = scan_headers(scope)
        state = scope.setdefault("state", {})
        if REFUSED in scope:
            # the HTTP protocol refused it before its task ran (its trailer section over the limit, in the read of
            # its head) and sent the id it took then (``security/slow_clients._request_id``): the line names that
            rid = state.get("request_id") or rid
        state["request_id"] = rid
        begun = time.perf_counter()  # not loop.time(): uvloop's has millisecond steps
        # one object per request: its send and receive (bound methods), its numbers and its log context; it
        # replaced four closures over twenty-odd cells (docs/benchmarks-log.md, issue 16)
        exchange = _Exchange(self, scope, rid, receive, send)
        token = CONTEXT.set(exchange)
        holds = self.holds
        wait = 0.0
        if holds is not None and (holds.until or holds.returning):
            client = connection(scope)
            if holds.returning:
                holds.came(client)  # a client sent back from a hold, come back
            # a retry before its Retry-After: held (below) until then, or until the server has room, and then
            # answered 503 "retry now", never run (http/holds.py)
            if scope["method"] != "OPTIONS":  # a browser's CORS preflight is no retry: CORS answers it
                wait = holds.hold(client, scope["path"])
        # the whole body is due within body_timeout_s of now (after any hold); a body the server has whole already
        # (BODY_IN) cannot keep a receive waiting: no timer for it
        exchange.deadline = exchange.loop.time() + self.body_timeout_s
        exchange.whole = BODY_IN in scope
        out = exchange.send
        limit = self.max_body_bytes
        setting = "max_body_bytes"
        if declared is not None and declared > limit:
            path = scope["path"]
            for pattern, upload_limit in self.uploads:
                if pattern.match(path):
                    limit, setting = upload_limit, "max_upload_bytes"
                    break
        # one coroutine serves the request, from its limits to its access line (a second one for the serving
        # part cost a call and a frame per request)
        try:
            if declared is not None and declared > limit:
                detail = _too_large(limit, setting)
                REPORTER.refused("body_size", 413, None, detail)
                self._too_large()
                response = error_response(Request(scope), 413, PayloadTooLarge.title, detail, {"connection": "close"})
                await response(scope, receive, out)
                return
            if wait > 0.0:
                assert holds is not None
                held = await holds.wait(wait, scope.get(IN_PROGRESS), client)
                if held:
                    # a client that left while its request was held gets no answer (its access line says 499);
                    # with the body in, the receive says so at once (a body still to come is not waited for)
                    if BODY_IN not in scope or (await receive())["type"] != "http.disconnect":
                        scope[HELD] = held
                        await self.held_answer(scope, receive, out)
                    return
            try:
                await self.app(scope, exchange.receive, out)
            except ClientDisconnect:
                # the client left while its body was arriving: nobody to answer (the access log says 499); or the
                # HTTP protocol answered the request itself and stopped reading it (a trailer section over the limit)
                if REFUSED in scope:
                    log.info(
                        "request %s: refused as its body arrived (%d)", scope["state"]["request_id"], scope[REFUSED]
                    )
                else:
                    log.info(
                        "request %s: the client disconnected before its body arrived", scope["state"]["request_id"]
                    )
            except Exception as exc:
                if exchange.started:
                    raise
                request = Request(scope)
                if isinstance(exc, ModelAPIError):
                    response = await handle_modelapi_error(request, exc)
                else:
                    response = await handle_unexpected(request, exc)
                await response(scope, receive, out)
        finally:
            timer = exchange.timer
            if timer is not None:
                timer.cancel()
            if exchange.access:
                # no answer sent: the client left (499), or the HTTP protocol answered itself (``REFUSED``)
                status = exchange.status or scope.get(REFUSED, 499)
                access_line(scope, rid, status, exchange.sent, time.perf_counter() - begun)
            CONTEXT.reset(token)
            # the last request to end releases what is held; an end while a check for room is due counts in it
            if holds is not None and (holds.held or holds.settling):  # (http/holds.py)
                holds.ended(scope.get(IN_PROGRESS))


class _HeldAnswer:
    """The answer to a retry held until its ``Retry-After`` (``HELD``: how long): 503 with ``Retry-After: 0``, never
    run. Had it run, its answer would come the hold plus its own time after it was sent, past the queue-time budget
    that bounds what an admitted request waits; the client's next request is judged as any (docs/overload.md)."""

    def __init__(self, events: Events | None) -> None:
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.events is not None and self.events.active:
            self.events.request_rejected(RequestRejected(None, "http", "early_retry", 503))
        headers = {"retry-after": "0"}
        if (b"expect", b"100-continue") in ((n, v.lower()) for n, v in scope["headers"]):
            # as a refusal on the head: a client waiting for ``100 Continue``, which never comes, may send its body
            # or not, so the connection's next bytes could be either: it is closed
            headers["connection"] = "close"
        # (the path is left out: it is the client's, and the line the rejections reporter writes quotes the detail)
        detail = (
            f"sent before the Retry-After this connection was given for this path: held {scope[HELD]:.1f} s and not"
            " run; send it again now"
        )
        response = await handle_modelapi_error(Request(scope), EarlyRetry(detail, headers=headers))
        await response(scope, receive, send)


class _Exchange:
    """One request as the middleware serves it: ``send`` adds the standard headers and counts the bytes sent,
    ``receive`` enforces the body's limit and deadline; and the request this context serves, for log records
    (``logs.CONTEXT``): the model and version are read from the matched route's path parameters when a record
    asks, so routing need not report them (an error answer's version, when the route names none)."""

    __slots__ = (
        "access",
        "body_done",
        "deadline",
        "expired",
        "limit",
        "loop",
        "middleware",
        "received",
        "request_id",
        "routed",
        "scope",
        "sent",
        "started",
        "status",
        "task",
        "timer",
        "tls",
        "upstream_receive",
        "upstream_send",
        "waiting",
        "whole",
    )

    def __init__(
        self, middleware: RequestContextMiddleware, scope: Scope, request_id: str, receive: Receive, send: Send
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.request_id = request_id
        self.upstream_receive = receive
        self.upstream_send = send
        # the access line's numbers are only gathered when it will be written (docs/observability.md#logs)
        self.access = ACCESS_LOG.isEnabledFor(logging.INFO)
        self.started = False
        self.status = 0
        self.sent = 0
        self.tls = scope.get("scheme") == "https"
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0  # these two are set once any hold is over
        self.whole = False
        self.limit = middleware.max_body_bytes
        self.received = 0
        self.body_done = False
        self.routed = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[object] | None = None
        self.waiting = False
        self.expired = False

    @property
    def model(self) -> str | None:
        params = self.scope.get("path_params")
        return params.get("name") if params else None

    @property
    def version(self) -> str | None:
        """The version the route names, else the one an error answer named (``http/errors.ERROR_VERSION``)."""
        scope = self.scope
        params = scope.get("path_params")
        version = params.get("version") if params else None
        return version if version is not None else scope.get(ERROR_VERSION)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.access:
                self.sent += len(message.get("body", b""))
        elif kind == "http.response.start":
            self.started = True
            status = self.status = message["status"]
            # raw (lower-case bytes) headers, as ASGI has them: MutableHeaders costs more than the rest here
            raw = list(message.get("headers", ()))
            present = set(map(bytes.lower, map(_NAME, raw)))
            holds = self.middleware.holds
            if holds is not None and status == 503:  # not 429: that is one key's limit, not the path's
                retry_after = next((v for k, v in raw if k.lower() == b"retry-after"), None)
                if retry_after is not None:
                    holds.refused(connection(self.scope), self.scope["path"], retry_after)
            raw.append((b"x-request-id", self.request_id.encode("latin-1")))
            if present.isdisjoint(_STANDARD_NAMES):
                raw += STANDARD_RAW
            else:  # the route set some of them (the docs page, its own CSP): its own stay, alone
                raw += [header for header in STANDARD_RAW if header[0] not in present]
            if self.tls and b"strict-transport-security" not in present:
                raw.append(_HSTS_RAW)
            message["headers"] = raw
        await self.upstream_send(message)

    async def receive(self) -> Message:
        if self.body_done:  # after the body: waiting for a disconnect is no read
            return await self.upstream_receive()
        if not self.routed:  # the first read: the matched route's own limit, if it has one, else max_body_bytes
            self.routed = True
            self.limit = self.scope.get(BODY_LIMIT) or self.middleware.max_body_bytes
        loop = self.loop
        if self.expired or loop.time() >= self.deadline:
            raise self._timed_out()
        if self.whole:
            # no timer (nothing to interrupt: the body is here), so nothing can cancel this read for the deadline
            message = await self.upstream_receive()
        else:
            if self.timer is None:
                # one timer per request for the whole body (not one per receive: that costs more than the rest of
                # the middleware); it interrupts only a receive that is waiting, else the next receive sees the
                # deadline
                self.task = asyncio.current_task()
                # an empty context: a cancelled timer waits in the loop's heap until its deadline, and one holding
                # this request's context would keep its scope alive that long (measured: +5 µs a request)
                self.timer = loop.call_at(self.deadline, self._expire, context=contextvars.Context())
            self.waiting = True
            try:
                message = await self.upstream_receive()
            except asyncio.CancelledError:
                task = self.task
                if self.expired and task is not None and task.uncancel() == 0:
                    raise self._timed_out() from None
                raise
            finally:
                self.waiting = False
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            limit = self.limit
            if self.received > limit:
                self.middleware._too_large()
                raise PayloadTooLarge(_too_large(limit, _limit_name(self.scope)), headers={"connection": "close"})
            self.body_done = not message.get("more_body", False)
        else:
            self.body_done = True
        if self.body_done and self.timer is not None:
            self.timer.cancel()
        return message

    def _expire(self) -> None:
        self.expired = True
        if self.waiting and self.task is not None:
            self.task.cancel()

    def _timed_out(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request body did not arrive within {self.middleware.body_timeout_s:g} s (body_timeout_s)",
            headers={"connection": "close"},
        )


def _too_large(limit: int, setting: str = "max_body_bytes") -> str:
    return f"the request body is larger than the limit of {limit} bytes ({setting})"


def _limit_name(scope: Scope) -> str:
    return "max_upload_bytes" if scope.get(BODY_LIMIT) else "max_body_bytes"


def request_context(
    settings: Settings,
    events: Events | None = None,
    uploads: Sequence[tuple[re.Pattern[str], int]] = (),
    holds: RetryHolds | None = None,
) -> Middleware:
    """The outermost middleware, configured from ``settings``; ``events`` hears of bodies refused as too large;
    ``uploads``: the path patterns of routes with a body limit of their own, and that limit; ``holds``: the
    early retries to hold (``settings.hold_early_retries``: a new one when not given; off: none)."""
    return Middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        events=events,
        uploads=uploads,
        # one per app: both paths share it, and the protocol's refusals on the head (http/shedding.py)
        holds=(holds or RetryHolds()) if settings.hold_early_retries else None,
        cors=cors(settings),
    )


def cors(settings: Settings) -> list[Middleware]:
    """CORS for the operator's allow-list of origins; none (browsers' same-origin policy) by default.

    It belongs outside authentication: a browser's preflight ``OPTIONS`` carries no API key.
    """
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "authorization",
                "x-api-key",
                "content-type",
                "inference-header-content-length",
                "x-request-id",
                "idempotency-key",
            ],
            expose_headers=["x-request-id", "retry-after", "inference-header-content-length", "location"],
            max_age=600,
        )
    ]
