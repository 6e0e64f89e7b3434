"""Who is calling: the identity authentication attaches to a request, read by routes and job ownership."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .key_limits import Limit

if TYPE_CHECKING:  # the core imports Principal; it must not import Starlette
    from starlette.requests import HTTPConnection

SCOPE_KEY = "modelapi.principal"
#: set in the scope of a request to a public path (a page, its assets) that came without a key while
#: authentication is on: it sees no models (``visible_models``), as opposed to no principal with authentication off
ANONYMOUS_KEY = "modelapi.anonymous"


@dataclass(frozen=True)
class Principal:
    """An authenticated API key. ``models`` is ``None`` when the key may use every model; ``limits``: its rate
    limits and quotas (``security/meter.py`` enforces them)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None
    limits: tuple[Limit, ...] = ()

    def can_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def is_anonymous(conn: HTTPConnection | Mapping[str, Any]) -> bool:
    """A request without a key to a public path, while authentication is on."""
    scope = conn.scope if hasattr(conn, "scope") else conn
    return bool(scope.get(ANONYMOUS_KEY))


def current_principal(conn: HTTPConnection | Mapping[str, Any]) -> Principal | None:
    """The request's principal (from a request or an ASGI scope); ``None`` when authentication is off."""
    scope = conn.scope if hasattr(conn, "scope") else conn
    principal = scope.get(SCOPE_KEY)
    return principal if isinstance(principal, Principal) else None


def visible_models(conn: HTTPConnection | Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The names, in order, that the request's key may see: all of them when authentication is off, none to a
    request without a key on a public path while it is on."""
    scope = conn.scope if hasattr(conn, "scope") else conn
    if scope.get(ANONYMOUS_KEY):
        return []
    principal = current_principal(conn)
    return [n for n in names if principal is None or principal.can_use(n)]
