"""The one place errors become responses.

An error is written in the style of the protocol whose route failed: the route carries it (``ERROR_STYLE``
in the scope, put there by ``http/routing.ProtocolRoute`` when it matched), so the Open Inference Protocol
answers ``{"error": "..."}`` and the others ``application/problem+json`` (RFC 9457). An error raised before
routing (no key, a body over the limit, no such route) takes the style of the registered protocol that owns
the path's prefix (``protocols.error_style_for``). A 500 reveals nothing but a request id: the traceback goes
to the log under the same id. Refusals under load (503, 429, 504, 413) are not logged one by one but counted
by ``http/rejections.py``. An error the data plane raised while a call held its version (``exc.version``:
a validation 400, a 413 over the row limit, a model's 500, a queue-time 503, a 504) names that version in a
``Model-Version`` header, as a prediction does; one raised before a version was chosen names none.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import jsonutil
from ..errors import InvalidInput, ModelAPIError
from ..protocols import PROBLEM, ErrorStyle, error_style_for
from .rejections import REPORTER, reason_for
from .responses import VERSION_HEADER

log = logging.getLogger("modelapi")

#: the scope key of the matched route's error style
ERROR_STYLE = "modelapi.error_style"
#: the scope key of the matched route's own body-size limit, where it has one (job uploads)
BODY_LIMIT = "modelapi.body_limit"
#: the scope key of the version an error answer names (``ModelAPIError.version``), for the request's log lines
ERROR_VERSION = "modelapi.error_version"

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


def model_of(request: Request) -> str | None:
    """The model the matched route names (``{name}``), if any."""
    params = request.scope.get("path_params")
    name = params.get("name") if params else None
    return name if isinstance(name, str) else None


#: characters after which ``request.url.path`` differs from the scope's path (escaped or dropped by ``URL``)
_UNUSUAL = frozenset("?#\\\t\r\n")


def request_path(request: Request) -> str:
    """``request.url.path`` without building the URL (host header, ``urlsplit``) for a path it would leave as it
    is: every error response and every refusal asks for it."""
    path: str = request.scope["path"]
    if path.startswith("//") or not _UNUSUAL.isdisjoint(path):
        return request.url.path
    return path


def error_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> Response:
    path = request_path(request)
    style = request.scope.get(ERROR_STYLE)
    if not isinstance(style, ErrorStyle):
        style = error_style_for(path)
    body = style.body(status, title, detail, path, request_id(request))
    if field is not None and style is PROBLEM:
        # an RFC 9457 extension member: the input the problem is with, for a form to show it next to the field
        body["field"] = field
    return Response(jsonutil.dumps(body), status_code=status, headers=headers, media_type=style.media_type)


async def handle_modelapi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelAPIError)
    headers = exc.headers
    version = exc.version
    if version is not None:  # the version that refused the call (set where the data plane held it)
        headers = {**headers, VERSION_HEADER: version}
        request.scope[ERROR_VERSION] = version
    reason = reason_for(exc)
    if reason is not None:  # a refusal under load: counted, one warning a second (http/rejections.py)
        REPORTER.refused(reason, exc.status, model_of(request), exc.detail)
    elif exc.status >= 500:
        # the cause (if any) was logged where it happened; log the id so the two can be joined
        log.error("request %s failed: %s", request_id(request), exc.detail)
    field = exc.field if isinstance(exc, InvalidInput) else None
    return error_response(request, exc.status, exc.title, exc.detail, headers, field)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    title = _TITLES.get(status, "Error")
    if status == 404:
        detail = f"no route {request.method} {request_path(request)}; see /docs for the routes this server offers"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request_path(request)}; allowed: {allowed}"
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
