"""Authentication in the OpenAPI document: how a key is sent, which operations need one, and the answers
authentication and the per-key rate limit add.

The facts come from the running app, so the document claims security exactly when the server enforces it:
``security/auth.py`` decides whether authentication is on and which paths stay open, and the rate limit
(``security/limits.py``) applies only to requests that carry a key. With authentication off the document is
left as it is: no schemes, no requirement, no 401, 403 or 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocols import ErrorStyle, error_style_for, registered
from ..security.auth import CHALLENGE, OPEN_PATHS, PublicPaths, is_management
from . import openapi_schemas as s

if TYPE_CHECKING:
    from .services import Services

#: the two ways a key is accepted (``security/auth.py``); if both are sent they must carry the same key
SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "mk_<id>_<secret>",
        "description": "the API key as 'Authorization: Bearer <key>'",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "the API key as 'X-API-Key: <key>'",
    },
}

_TEXT = {
    401: "no API key, or one that is malformed, unknown, expired, revoked, or sent in the query string",
    403: "the API key lacks the admin scope this route needs",
    429: "the API key is over its request rate; retry after Retry-After seconds",
}


@dataclass(frozen=True)
class Access:
    """What the server enforces that the document must say: authentication, and the rate limit with it."""

    auth: bool = False
    rate_limit: bool = False

    @classmethod
    def of(cls, services: Services) -> Access:
        """From the services ``create_app`` built (its ``Auth`` and settings); off without authentication."""
        on = bool(services.auth is not None and services.auth.enabled)
        return cls(on, on and services.settings.rate_limit > 0)


def requirement() -> list[dict[str, list[str]]]:
    """Either scheme will do: two requirement objects, which OpenAPI reads as alternatives."""
    return [{name: []} for name in SCHEMES]


def _answer(code: int, style: ErrorStyle) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _TEXT[code],
        "content": {style.media_type: {"schema": s.ref(style.schema)}},
    }
    if code == 401:
        answer["headers"] = {
            "WWW-Authenticate": {
                "description": f'{CHALLENGE}, with error="invalid_token" when a key was sent but refused',
                "schema": {"type": "string"},
            }
        }
    elif code == 429:
        answer["headers"] = {
            "Retry-After": {
                "description": "seconds until the key may send again",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return answer


def secure(doc: dict[str, Any], access: Access) -> dict[str, Any]:
    """``doc`` (built for one app) with what authentication adds when it is on; unchanged when it is off."""
    if not access.auth:
        return doc
    admin_paths = {path for protocol in registered() for path in protocol.admin_paths}
    public = PublicPaths(path for protocol in registered() for path in protocol.public_paths)
    for path, item in doc["paths"].items():
        style = error_style_for(path)  # as ``http/errors.py`` writes the errors of the protocol owning the path
        for op in item.values():
            if path in OPEN_PATHS:
                op["security"] = []  # the health probes need no key
                continue
            if path in public:
                # pages and documents: a key is optional (one sent is checked: 401 if refused)
                op["security"] = [{}, *requirement()]
                sent = [401, *([429] if access.rate_limit else [])]
                responses = {**op["responses"], **{str(c): _answer(c, style) for c in sent}}
                op["responses"] = dict(sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))
                continue
            admin = is_management(path) or path in admin_paths
            codes = [401, *([403] if admin else []), *([429] if access.rate_limit else [])]
            responses = {**op["responses"], **{str(c): _answer(c, style) for c in codes}}
            op["responses"] = dict(sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))
    doc["components"]["securitySchemes"] = {name: dict(scheme) for name, scheme in SCHEMES.items()}
    doc["security"] = requirement()
    doc["info"]["description"] += (
        " Every operation but the health probes and the pages needs an API key, sent as "
        "'Authorization: Bearer <key>' or 'X-API-Key: <key>' (never in the query string)."
    )
    return doc
