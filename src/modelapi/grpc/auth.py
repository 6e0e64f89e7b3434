"""API keys on gRPC calls: the key from ``authorization: Bearer <key>`` or ``x-api-key`` metadata, looked up in
the same key store with the same rules and messages as HTTP (``security/auth.py``), and the same per-key rate.

``ServerLive`` and ``ServerReady`` are open, as ``/v2/health/*`` are; the repository RPCs need the admin scope
(and are refused when authentication is off, as the HTTP management routes are). Which models a key may use
is the data plane's rule: a model outside the key's list is ``NOT_FOUND``. Rate limits and quotas are the
worker's ``KeyLimits`` (``Services.limits``), so a key's calls over HTTP and gRPC count against one rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from ..errors import Forbidden, Unauthorized
from ..events import Events, RequestRejected
from ..security.auth import CHALLENGE, MISSING, Auth
from ..security.auth import presented_key as key_of_headers
from ..security.keys import InvalidKey
from ..security.limits import KeyLimits
from ..security.principal import Principal


class Authenticator:
    """Who calls, from a call's metadata; refusals are reported to ``events`` with protocol ``grpc``."""

    def __init__(self, auth: Auth, limits: KeyLimits | None, events: Events) -> None:
        self.auth = auth
        self.events = events
        self.limits = limits  # the worker's, shared with HTTP: one rate per key
        store = auth.store
        self.in_thread = store is not None and not store.url.startswith("sqlite")

    async def principal(
        self, metadata: Iterable[tuple[str, str | bytes]], method: str, *, admin: bool = False
    ) -> Principal | None:
        """The calling key's principal (``None`` with authentication off); raises ``Unauthorized``,
        ``Forbidden`` or ``TooManyRequests``."""
        try:
            principal = await self._authenticate(metadata, method, admin)
        except (Unauthorized, Forbidden) as exc:
            self._rejected("unauthenticated" if exc.status == 401 else "forbidden", exc.status)
            raise
        if principal is not None and self.limits is not None:
            await self.limits.admit(principal, "grpc")
        return principal

    async def _authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]], method: str, admin: bool
    ) -> Principal | None:
        store = self.auth.store
        if store is None:
            if admin:  # loading and unloading models is never open, not even on loopback
                raise Forbidden(
                    f"{method} needs an API key with the admin scope, and authentication is off: create one "
                    "with 'modelapi keys create --name NAME --scope admin' and restart the server"
                )
            return None
        key = presented_key(metadata)
        if key is None:
            raise Unauthorized(MISSING, headers={"www-authenticate": CHALLENGE})
        try:
            if self.in_thread:
                cached = store.cached(key)  # a key looked up less than key_cache_s ago needs no thread
                principal = (
                    cached if cached is not None else await asyncio.to_thread(store.authenticate, key, time.time())
                )
            else:
                principal = store.authenticate(key, time.time())
        except InvalidKey as exc:
            raise Unauthorized(exc.reason) from None
        if admin and not principal.has_scope("admin"):
            raise Forbidden(f"{method} needs a key with the admin scope; key mk_{principal.key_id} has not")
        return principal

    def _rejected(self, reason: str, status: int) -> None:
        if self.events.active:
            self.events.request_rejected(RequestRejected(None, "grpc", reason, status))


def presented_key(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key in ``authorization: Bearer <key>`` or ``x-api-key`` metadata, read as HTTP reads the headers."""
    authorization = api_key = None
    for name, value in metadata:
        if isinstance(value, bytes):  # binary metadata ("-bin" keys) carries no key
            continue
        if name == "authorization":
            authorization = value
        elif name == "x-api-key":
            api_key = value
    return key_of_headers(authorization, api_key)
