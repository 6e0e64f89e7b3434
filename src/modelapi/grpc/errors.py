"""The one place errors become gRPC statuses: a ``ModelAPIError``'s HTTP status picks the code, its detail (the
same text the HTTP front end sends) is the status message, and ``Retry-After`` travels as trailing metadata.

Anything else is a bug: it is logged with its traceback here and the client gets ``INTERNAL`` with no detail.
"""

from __future__ import annotations

import logging

import grpc

from ..errors import ModelAPIError

log = logging.getLogger("modelapi")

#: HTTP status of a ModelAPIError -> gRPC status code (the mapping gRPC's own HTTP guidance uses, inverted)
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

#: gRPC status code -> the HTTP status events and metrics record for it (the inverse, for the observer)
STATUSES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}

INTERNAL_MESSAGE = "internal server error"


def code_for(exc: ModelAPIError) -> grpc.StatusCode:
    return CODES.get(exc.status, grpc.StatusCode.INTERNAL if exc.status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The code, message and trailing metadata a failed RPC answers with."""
    if isinstance(exc, ModelAPIError):
        trailers = tuple((k.lower(), v) for k, v in exc.headers.items() if k.lower() == "retry-after")
        return code_for(exc), exc.detail, trailers
    log.error("gRPC call failed", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, ()


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with ``exc``'s status (never returns)."""
    code, message, trailers = status_of(exc)
    if trailers:
        context.set_trailing_metadata(trailers)
    await context.abort(code, message)
