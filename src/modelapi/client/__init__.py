"""The Python client: ``Client`` (blocking) and ``AsyncClient`` over httpx, one implementation of the logic
(``calls.py``, ``retry.py``) driven by a sync and an async loop. See docs/client.md.
"""

from __future__ import annotations

from .aio import AsyncClient, AsyncJob
from .errors import (
    AuthenticationError,
    BadRequestError,
    ClientError,
    ClientTimeoutError,
    ConflictError,
    ConnectionFailedError,
    HTTPStatusError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)
from .sync import Client, Job

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "ConflictError",
    "ConnectionFailedError",
    "HTTPStatusError",
    "Job",
    "JobFailedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
]
