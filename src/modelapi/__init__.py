"""modelapi: one command turns a trained model into a robust, documented JSON web API.

The public surface is what ``__all__`` lists; everything else is internal and may change. Names are imported
on first use, so ``import modelapi`` stays cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Model": "modelapi.models.base",
    "ModelAPIError": "modelapi.errors",
    "Settings": "modelapi.settings",
    "Signature": "modelapi.signature",
    "TensorSpec": "modelapi.signature",
    "Trust": "modelapi.models.trust",
    "create_app": "modelapi.http.app",
    "load_model": "modelapi.models.registry",
    # the Python client (docs/client.md); httpx and numpy load on first use
    "AsyncClient": "modelapi.client",
    "Client": "modelapi.client",
    "AuthenticationError": "modelapi.client.errors",
    "BadRequestError": "modelapi.client.errors",
    "ClientError": "modelapi.client.errors",
    "ClientTimeoutError": "modelapi.client.errors",
    "ConflictError": "modelapi.client.errors",
    "ConnectionFailedError": "modelapi.client.errors",
    "HTTPStatusError": "modelapi.client.errors",
    "JobFailedError": "modelapi.client.errors",
    "NotFoundError": "modelapi.client.errors",
    "PermissionDeniedError": "modelapi.client.errors",
    "RateLimitError": "modelapi.client.errors",
    "ServerError": "modelapi.client.errors",
    "ServiceUnavailableError": "modelapi.client.errors",
}

__all__ = [
    "Model",
    "ModelAPIError",
    "Settings",
    "Signature",
    "TensorSpec",
    "Trust",
    "__version__",
    "create_app",
    "load_model",
]
# the Python client (docs/client.md)
__all__ += [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
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

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .client.errors import (
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
    from .errors import ModelAPIError
    from .http.app import create_app
    from .models.base import Model
    from .models.registry import load_model
    from .models.trust import Trust
    from .settings import Settings
    from .signature import Signature, TensorSpec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelapi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
