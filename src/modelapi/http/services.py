"""What routes receive: the services they use, passed explicitly when the app is assembled.

Every protocol's ``routes(services)`` builds handlers that close over one ``Services``; no handler looks
anything up on ``request.app.state``, so what a route depends on is visible in its code, and a test (or
another front end) can hand it a data plane of its own. ``Services`` also turns a request into the
``CallContext`` the data plane takes and reads bodies within the server's limits.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import Receive

from ..context import CallContext, JsonLimits
from ..dataplane import Call, DataPlane
from ..jobs.host import JobsHost
from ..monitor.service import Monitor
from ..repository.registry import Repository
from ..security.auth import Auth
from ..security.limits import KeyLimits
from ..security.principal import SCOPE_KEY, Principal
from ..security.slow_clients import ARRIVED, CONNECTION, GONE, IN_PROGRESS
from ..settings import Settings
from . import request as bodies


@dataclass
class Services:
    """The data plane (and through it the repository), the jobs host, authentication, the settings and the
    prediction log's monitor."""

    dataplane: DataPlane
    settings: Settings
    jobs: JobsHost | None = None
    auth: Auth | None = None
    #: per-key admission (rate limits, quotas) of this worker, shared by every front end (HTTP middleware, gRPC)
    limits: KeyLimits | None = None
    monitor: Monitor | None = None
    json_limits: JsonLimits = field(init=False)
    #: ``settings.max_body_bytes``, read once: a pydantic model's attribute read takes CPython's slow path (its
    #: class defines ``__getattr__``), and a body is read on every request
    max_body_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.json_limits = JsonLimits(self.settings.max_json_depth, self.settings.max_json_elements)
        self.max_body_bytes = self.settings.max_body_bytes

    @property
    def repository(self) -> Repository:
        return self.dataplane.repository

    def context(self, request: Request, protocol: str) -> CallContext:
        """What the data plane needs to know of this request: who calls, its id, the protocol, the JSON limits."""
        scope = request.scope
        state = scope.get("state")
        rid = state.get("request_id") if state else None
        principal = scope.get(SCOPE_KEY)  # security/principal.current_principal, inline: once a request
        if principal is not None and not isinstance(principal, Principal):
            principal = None
        limits = self.limits
        rows = limits.row_charger(principal, protocol) if limits and principal and principal.limits else None
        # the protocol's check of the connection where it runs (a check per batch); else the ASGI way, a task
        # per waiting call that reads ``receive`` for the disconnect
        gone = scope.get(GONE)
        # positional: a keyword call costs more, on every request
        return CallContext(
            protocol,
            principal,
            rid,
            None,  # deadline
            True,  # timed
            self.json_limits,
            rows,
            None if gone is not None else functools.partial(_disconnected, request.receive),
            scope.get(ARRIVED),
            scope.get(IN_PROGRESS),
            gone,
            scope.get(CONNECTION),
        )

    def max_rows(self, call: Call) -> int | None:
        """The row limit for a call: the called version's ``max_rows`` (model.toml), else the server's."""
        limit = call.handle.max_rows
        return limit if limit is not None else self.dataplane.max_rows

    # bodies, within the server's limits ---------------------------------------------------------------------
    # (plain functions returning the reading coroutine: one coroutine less per request than awaiting it here)
    def body(self, request: Request) -> Coroutine[Any, Any, bytes]:
        return bodies.read_body(request, self.max_body_bytes)

    def json(self, request: Request, *, typed: bool = False) -> Coroutine[Any, Any, Any]:
        """The JSON body; ``typed``: the route has called ``require_json`` already (on the head)."""
        return bodies.read_json(request, self.max_body_bytes, self.json_limits, typed=typed)

    def upload(self, request: Request) -> AsyncIterator[bytes]:
        """A job upload's body in blocks, decompressed, within ``max_upload_bytes`` (not ``max_body_bytes``)."""
        return bodies.stream_body(request, self.settings.max_upload_bytes)

    def inflater(self, request: Request) -> bodies.Inflater | None:
        return bodies.inflater(request, self.max_body_bytes)


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has disconnected; called only after the body was read (what else could arrive is
    nothing but the disconnect, or an empty body message for a request without one)."""
    while (await receive())["type"] != "http.disconnect":
        pass
