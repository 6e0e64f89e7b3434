"""The one place errors become responses.

Open Inference Protocol routes (``/v2``...) answer ``{"error": "..."}`` as that protocol requires; every other
route answers ``application/problem+json`` (RFC 9457). A 500 reveals nothing but a request id: the traceback
goes to the log under the same id.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import jsonutil
from ..errors import ModelAPIError

log = logging.getLogger("modelapi")

_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(
    request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    rid = request_id(request)
    path = request.url.path
    body: dict[str, Any]
    if path == "/v2" or path.startswith("/v2/"):
        body = {"error": detail}
        if rid:
            body["request_id"] = rid
        media_type = "application/json"
    else:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": path}
        if rid:
            body["request_id"] = rid
        media_type = "application/problem+json"
    return Response(jsonutil.dumps(body), status_code=status, headers=headers, media_type=media_type)


async def handle_modelapi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelAPIError)
    if exc.status >= 500:
        # the cause (if any) was logged where it happened; log the id so the two can be joined
        log.error("request %s failed: %s", request_id(request), exc.detail)
    return error_response(request, exc.status, exc.title, exc.detail, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    title = _TITLES.get(status, "Error")
    if status == 404:
        detail = f"no route {request.method} {request.url.path}; see /docs for the routes this server offers"
    elif status == 405:
        detail = (
            f"{request.method} is not allowed on {request.url.path}; allowed: {(exc.headers or {}).get('Allow', '')}"
        )
    else:
        detail = exc.detail if isinstance(exc.detail, str) else title
    return error_response(request, status, title, detail, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("request %s failed with an unexpected error", request_id(request), exc_info=exc)
    return error_response(
        request, 500, "Internal Server Error", "internal server error; quote the request id when reporting it"
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ModelAPIError: handle_modelapi_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
