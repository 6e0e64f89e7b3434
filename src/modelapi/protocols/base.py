"""What a protocol is to the server: its routes, its OpenAPI fragment and the style its errors are written in.

A protocol package (``protocols/<name>/``) ends its ``routes.py`` with one ``Protocol`` record, and
``protocols/__init__.py`` lists the records; the HTTP assembly (``http/app.py``), the error renderer
(``http/errors.py``) and the OpenAPI builder (``http/openapi.py``) read them and nothing else, so a new
protocol touches its own package and that one list. Plain data: importing this needs no web framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ..http.openapi import Ops
    from ..http.services import Services


# eq=False: hashed by identity, cheaply (a key of the refusal bodies ``http/shedding.py`` keeps, looked up on every
# refusal under a flood); each style is one object, made once
@dataclass(frozen=True, eq=False)
class ErrorStyle:
    """How one protocol writes an error: the body for (status, title, detail, path, request id), its media
    type, and the name of its schema in the OpenAPI components (for the answers authentication adds)."""

    name: str
    media_type: str
    schema: str
    body: Callable[[int, str, str, str, str], dict[str, Any]]


def _problem(status: int, title: str, detail: str, instance: str, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    return body


#: RFC 9457 problem details: the style of every protocol that has none of its own
PROBLEM = ErrorStyle("problem", "application/problem+json", "Problem", _problem)


@dataclass(frozen=True)
class Protocol:
    """One protocol, as the server assembles it.

    ``routes``: builds the protocol's routes over the services they use. ``prefixes``: paths the protocol
    owns, so an error raised before routing (no key, a body over the limit, no such route) is written in its
    style too. ``global_ops`` / ``per_model_ops``: OpenAPI describers keyed by path template
    (``/v2/models/{}/infer``); per-model ones are written once per served model and version. ``admin_paths``:
    paths of this protocol that need a key with the admin scope when authentication is on (open when it is
    off), as ``GET /metrics`` does on the main port; the authentication middleware reads them from here.
    ``public_paths``: path templates (``{}`` one segment, a final ``/*`` one file under a folder) that load
    without a key when authentication is on: pages and their static assets, which hold no data (their API
    calls carry the key the user enters in the page); see ``security/auth.PublicPaths``.
    """

    name: str
    routes: Callable[[Services], list[BaseRoute]]
    error_style: ErrorStyle = PROBLEM
    prefixes: tuple[str, ...] = ()
    global_ops: Mapping[str, Ops] = field(default_factory=dict)
    per_model_ops: Mapping[str, Ops] = field(default_factory=dict)
    admin_paths: tuple[str, ...] = ()
    public_paths: tuple[str, ...] = ()

    def owns(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)
