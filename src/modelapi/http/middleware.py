"""Per-request context as one pure ASGI middleware: request id, standard headers, body limits.

- Every response gets ``X-Request-ID``, ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff`` and a
  Content-Security-Policy that lets a browser do nothing with it (``default-src 'none'; frame-ancestors
  'none'``) unless the route set its own (the docs page does); over TLS, ``Strict-Transport-Security`` too.
- The body-size limit is counted while the body streams in, so a client that lies in ``Content-Length`` gains
  nothing (413). The whole body must arrive within ``body_timeout_s`` of the request's headers, so a client
  that trickles or stalls cannot hold the request open (408; uvicorn itself has no body-read timeout).
- JSON limits are not set here: routes pass the server's (``http/services.py``) to the codecs explicitly.

Errors raised outside the routes (a ``ModelAPIError`` from an inner middleware, or a crash) are rendered here,
so even those carry the request id.
"""

from __future__ import annotations

import asyncio
import os
import random
import re

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ModelAPIError, PayloadTooLarge, RequestTimeout
from ..settings import Settings
from .errors import error_response, handle_modelapi_error, handle_unexpected

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: request ids: not secrets, only unique, so no system call per request; a generator of our own, so a model that
#: seeds ``random`` for reproducibility cannot make ids repeat, reseeded in every forked worker
_IDS = random.Random()  # noqa: S311 (ids are not secrets: nothing trusts them)
os.register_at_fork(after_in_child=_IDS.seed)
CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"
_STANDARD_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", CSP),
]
_STANDARD_RAW = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in _STANDARD_HEADERS]


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float = 60.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, declared = _scan_headers(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = False
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # raw (lower-case bytes) headers, as ASGI has them: MutableHeaders costs more than the rest here
                raw = list(message.get("headers", ()))
                present = {key.lower() for key, _ in raw}
                raw.append((b"x-request-id", rid.encode("latin-1")))
                raw.extend(h for h in _STANDARD_RAW if h[0] not in present)
                if tls and b"strict-transport-security" not in present:
                    raw.append((b"strict-transport-security", HSTS.encode("latin-1")))
                message["headers"] = raw
            await send(message)

        limit = self.max_body_bytes
        if declared is not None and declared > limit:
            response = error_response(
                Request(scope), 413, PayloadTooLarge.title, _too_large(limit), {"connection": "close"}
            )
            await response(scope, receive, send_with_headers)
            return

        received = 0
        body_done = False
        # one timer per request for the whole body (not one per receive: that costs more than the rest of the
        # middleware); it interrupts only a receive that is waiting, else the next receive sees the deadline
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        task = asyncio.current_task()
        timer: asyncio.TimerHandle | None = None
        waiting = expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if waiting and task is not None:
                task.cancel()

        def timed_out() -> RequestTimeout:
            return RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s (body_timeout_s)",
                headers={"connection": "close"},
            )

        async def receive_limited() -> Message:
            nonlocal received, body_done, timer, waiting
            if body_done:  # after the body: waiting for a disconnect is no read
                return await receive()
            if expired or loop.time() >= deadline:
                raise timed_out()
            if timer is None:
                timer = loop.call_at(deadline, expire)
            waiting = True
            try:
                message = await receive()
            except asyncio.CancelledError:
                if expired and task is not None and task.uncancel() == 0:
                    raise timed_out() from None
                raise
            finally:
                waiting = False
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(_too_large(limit), headers={"connection": "close"})
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            if body_done:
                timer.cancel()
            return message

        try:
            await self.app(scope, receive_limited, send_with_headers)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            if isinstance(exc, ModelAPIError):
                response = await handle_modelapi_error(request, exc)
            else:
                response = await handle_unexpected(request, exc)
            await response(scope, receive, send_with_headers)
        finally:
            if timer is not None:
                timer.cancel()


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes (max_body_bytes)"


def _scan_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id (the client's ``X-Request-ID`` if well-formed, else a new one) and ``Content-Length``."""
    rid: str | None = None
    length: int | None = None
    seen_length = False
    for key, value in scope["headers"]:
        if key == b"content-length" and not seen_length:  # the first one, as uvicorn reads it
            seen_length = True
            try:
                length = int(value)
            except ValueError:
                length = None
        elif key == b"x-request-id" and rid is None:
            text: str = value.decode("latin-1")
            rid = text if _CLIENT_ID.fullmatch(text) else ""
    return rid or f"{_IDS.getrandbits(128):032x}", length


def request_context(settings: Settings) -> Middleware:
    """The outermost middleware, configured from ``settings``."""
    return Middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
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
