"""uvicorn's proxy step, done by modelapi's HTTP protocol on each request's head instead of as an ASGI layer.

uvicorn puts ``ProxyHeadersMiddleware`` in front of the server's app (its ``proxy_headers``, on by default): from a
client it trusts (its ``forwarded_allow_ips``: ``FORWARDED_ALLOW_IPS``, 127.0.0.1 and ::1 by default; ``modelapi
serve`` has no flag for it), ``X-Forwarded-Proto`` sets the scope's scheme and ``X-Forwarded-For`` its client. As a
layer it is one more coroutine a request passes through, and it asks whether the client is trusted on every
request, though a connection's client never changes. ``Forwarded`` takes that middleware's trusted hosts (the same
object, so the same setting decides) and does its work on a scope: the trust asked once per connection
(``trusts``), the headers read on each head of a trusted one (``apply``), as the middleware reads them
(``tests/http/test_forwarded.py`` holds the two to the same scopes). Only modelapi's HTTP protocol
(``security/slow_clients.py``) takes the middleware off: anything else uvicorn serves (a WebSocket upgrade,
another protocol) keeps it.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.types import ASGIApp, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

#: the schemes ``X-Forwarded-Proto`` may name, as uvicorn takes them
_SCHEMES = frozenset({"http", "https", "ws", "wss"})


class _Trusted(Protocol):
    """uvicorn's trusted hosts (``ProxyHeadersMiddleware.trusted_hosts``)."""

    def __contains__(self, host: Any) -> bool: ...

    def get_trusted_client_address(self, x_forwarded_for: str) -> tuple[str, int]: ...


class Forwarded:
    """The proxy step of one server: ``trusted`` is its ``ProxyHeadersMiddleware``'s trusted hosts."""

    __slots__ = ("trusted",)

    def __init__(self, trusted: _Trusted) -> None:
        self.trusted = trusted

    @classmethod
    def unwrap(cls, app: ASGIApp) -> tuple[ASGIApp, Forwarded | None]:
        """The app behind uvicorn's proxy step and that step, when ``app`` is uvicorn's middleware; else ``app``
        and ``None`` (``--no-proxy-headers``: no step)."""
        if isinstance(app, ProxyHeadersMiddleware):
            return app.app, cls(app.trusted_hosts)  # type: ignore[return-value]
        return app, None

    def trusts(self, client: tuple[str, int] | None) -> bool:
        """Whether the headers of a connection from ``client`` (its scope's ``client``) are taken."""
        return (client[0] if client else None) in self.trusted

    def apply(self, scope: Scope) -> None:
        """The scheme and client that a trusted client's ``X-Forwarded-Proto`` and ``X-Forwarded-For`` name, set
        in the scope of an HTTP request (as ``ProxyHeadersMiddleware`` sets them)."""
        proto: bytes | None = None
        forwarded_for: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
        if proto is not None:
            scheme = proto.decode("latin1").strip()
            if scheme in _SCHEMES:
                scope["scheme"] = scheme
        if forwarded_for:
            host, port = self.trusted.get_trusted_client_address(b", ".join(forwarded_for).decode("latin1"))
            if host:  # an empty X-Forwarded-For names no one: the client stays the connection's
                scope["client"] = (host, port)
