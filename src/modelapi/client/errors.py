"""What the client raises: ``ClientError`` and its subclasses, each carrying what the server said.

An answer of 400 or more becomes an ``HTTPStatusError`` subclass chosen by its status, with the server's
message (problem+json ``detail``, the Open Inference Protocol's ``{"error": ...}``, or the text of the body),
the status, and the request id (the ``X-Request-ID`` header, else the body's ``request_id``) that finds the
request in the server's log. ``str()`` reads as one line: ``400 Bad Request: record 0: 'petal_width'
expected a number, got string 'x' (POST /models/iris/predict, request id 8f11...)``.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ClientError",
    "ClientTimeoutError",
    "ConflictError",
    "ConnectionFailedError",
    "HTTPStatusError",
    "JobFailedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
]


class ClientError(Exception):
    """Anything the modelapi client raises (programming mistakes such as a wrong argument type aside)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailedError(ClientError):
    """The server could not be reached, or the connection broke, and retrying did not help."""


class ClientTimeoutError(ClientError, TimeoutError):
    """A request took longer than its ``timeout``, or the call's retries ran past its ``deadline``."""


class HTTPStatusError(ClientError):
    """The server answered with an error status. ``message`` is the server's own explanation."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        method: str = "",
        path: str = "",
        body: Any = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers if headers is not None else httpx.Headers()

    @property
    def retry_after(self) -> str | None:
        """The server's ``Retry-After`` header, as sent (a 429 or 503 usually carries one)."""
        value: str | None = self.headers.get("retry-after")
        return value

    def __str__(self) -> str:
        reason = httpx.codes.get_reason_phrase(self.status) or "Error"
        where = ", ".join(
            part
            for part in (f"{self.method} {self.path}".strip(), self.request_id and f"request id {self.request_id}")
            if part
        )
        return f"{self.status} {reason}: {self.message}" + (f" ({where})" if where else "")


class BadRequestError(HTTPStatusError):
    """400, 413, 415 or 422: the request was refused as it stands (the message names the field and the limit)."""


class AuthenticationError(HTTPStatusError):
    """401: no API key, or one the server does not know (give ``api_key=`` or set ``MODELAPI_API_KEY``)."""


class PermissionDeniedError(HTTPStatusError):
    """403: the key may not do this (e.g. a management route without the admin scope)."""


class NotFoundError(HTTPStatusError):
    """404: no such model, version, job or route (or one this key may not see)."""


class ConflictError(HTTPStatusError):
    """409: e.g. a job's result asked for before the job succeeded, or an idempotency key reused for other data."""


class RateLimitError(HTTPStatusError):
    """429: this key sent too many requests; retried within the deadline before this is raised."""


class ServerError(HTTPStatusError):
    """5xx: the server failed; quote the request id when reporting it."""


class ServiceUnavailableError(ServerError):
    """503: the server is starting, draining or overloaded; retried within the deadline before this is raised."""


class JobFailedError(ClientError):
    """A job ended without a result (``failed`` or ``cancelled``); ``message`` is the server's reason."""

    def __init__(self, message: str, *, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job
        self.job_id: str = str(job.get("id", ""))
        self.status: str = str(job.get("status", ""))
        error = job.get("error") or {}
        self.row: int | None = error.get("row")
        self.column: str | None = error.get("column")


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> HTTPStatusError:
    """The exception for an error answer (the body already read), with the server's message and request id."""
    body: Any = None
    message = ""
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        message = response.text.strip()[:1000]
    if isinstance(body, dict):
        # problem+json (detail, title), the Open Inference Protocol (error), or anything else that is JSON
        found = body.get("detail") or body.get("error") or body.get("message") or body.get("title")
        message = found if isinstance(found, str) else orjson.dumps(body).decode()[:1000]
    elif body is not None:
        message = orjson.dumps(body).decode()[:1000]
    request_id = response.headers.get("x-request-id") or (body.get("request_id") if isinstance(body, dict) else None)
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else HTTPStatusError)
    request = response.request
    return cls(
        message or response.reason_phrase or "no message",
        status=status,
        request_id=request_id,
        method=request.method,
        path=request.url.path,
        body=body,
        headers=response.headers,
    )
