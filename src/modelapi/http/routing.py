"""Routes that carry their protocol, and the model-access guard applied after routing.

A ``ProtocolRoute`` puts its protocol's error style in the scope when it matches, so ``http/errors.py``
writes an error the way the protocol whose route failed writes them, whatever the path looks like.

``guard`` wraps every route whose path names a model (a ``{name}`` parameter) and every route that
addresses the only model (``/predict``, ``/invocations``): a key limited to other models gets the 404 a
model that does not exist gets, before any handler runs. It is applied to the whole route table when the
app is assembled, so a route added by a new protocol cannot slip past a key's model list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ModelNotFound, RouteNotFound
from ..protocols.base import PROBLEM, ErrorStyle
from ..repository.registry import Repository
from ..security.principal import SCOPE_KEY, Principal
from .errors import BODY_LIMIT, ERROR_STYLE

_NAME = re.compile(r"\{name(?::[^}]*)?\}")
#: read once: an enum class's attribute read takes CPython's slow path (3.11's ``EnumType.__getattr__``)
_NONE, _FULL = Match.NONE, Match.FULL


class ProtocolRoute(Route):
    """A Starlette route with its protocol's ``error_style``; ``inference``: tried before the others (no other
    route matches its paths, and these carry most traffic); ``only_model``: addresses the only model served."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        error_style: ErrorStyle = PROBLEM,
        inference: bool = False,
        only_model: bool = False,
        body_limit: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.error_style = error_style
        self.inference = inference
        self.only_model = only_model
        self.body_limit = body_limit

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not _NONE:  # a partial match (405) is this protocol's too
            child[ERROR_STYLE] = self.error_style
            if self.body_limit is not None and match is _FULL:
                child[BODY_LIMIT] = self.body_limit
        return match, child


def body_limits(routes: Sequence[BaseRoute]) -> list[tuple[re.Pattern[str], int]]:
    """The path pattern and limit of every route with a body limit of its own (job uploads)."""
    return [
        (route.path_regex, route.body_limit)
        for route in routes
        if isinstance(route, ProtocolRoute) and route.body_limit is not None
    ]


def names_model(route: BaseRoute) -> bool:
    """Whether the route's path has a ``{name}`` parameter (a model's name)."""
    return bool(_NAME.search(getattr(route, "path", "")))


def guard(routes: Sequence[BaseRoute], repository: Repository) -> list[BaseRoute]:
    """``routes``, each one that names a model (or the only one) checking the caller's key may use it."""
    for route in routes:
        if not isinstance(route, Route):
            continue
        if names_model(route):
            route.app = _ModelGuard(route.app, repository, None)
        elif getattr(route, "only_model", False):
            route.app = _ModelGuard(route.app, repository, route.path)
    return list(routes)


class _ModelGuard:
    """An ASGI wrapper around one route's handler: the key's model list, checked from the matched route."""

    def __init__(self, app: ASGIApp, repository: Repository, only_path: str | None) -> None:
        self.app = app
        self.repository = repository
        self.only_path = only_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.check(scope)
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        """Raises the 404 for a key that may not use the matched route's model (``http/fastpath.py`` calls it
        too, for the routes it dispatches)."""
        principal = scope.get(SCOPE_KEY)  # current_principal, inline: on every request to a model's route
        if isinstance(principal, Principal) and principal.models is not None:
            if self.only_path is not None:
                names = self.repository.names()
                if not (len(names) == 1 and principal.can_use(names[0])):
                    path = self.only_path
                    raise RouteNotFound(f"{path} needs exactly one served model; use /models/{{name}}{path}")
            else:
                name = scope["path_params"]["name"]
                # the key's list only: whether the model exists is the handler's to say (a model on disk but
                # not yet known can be loaded); an unknown name gets the same 404 text, so none can be enumerated
                if not principal.can_use(name):
                    raise ModelNotFound(f"no model named '{name}'")
