"""Per-request context as one pure ASGI middleware: request id, standard headers, body-size limit.

The body limit is counted while the body streams in, so a client that lies in ``Content-Length`` gains
nothing. Unexpected exceptions are turned into a JSON 500 here, so even those carry the request id.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge
from .errors import error_response, handle_unexpected

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STANDARD_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", rid)
                for key, value in _STANDARD_HEADERS:
                    if key.decode() not in headers:
                        headers.append(key.decode(), value.decode())
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = error_response(
                Request(scope), 413, PayloadTooLarge.title, _too_large(limit), {"connection": "close"}
            )
            await response(scope, receive, send_with_headers)
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(_too_large(limit), headers={"connection": "close"})
            return message

        try:
            await self.app(scope, receive_limited, send_with_headers)
        except Exception as exc:
            if started:
                raise
            response = await handle_unexpected(Request(scope), exc)
            await response(scope, receive, send_with_headers)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _CLIENT_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
