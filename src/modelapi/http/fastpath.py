"""The inference routes' direct dispatch: the same middleware, without Starlette's router and error layers.

Starlette puts five layers around every request besides our own middleware: its server-error middleware, its
exception middleware (each with a wrapper around ``send``), the router trying each route's pattern, the route's
``request_response`` wrapper and a second exception-handling wrapper around the handler. For the inference
routes (``POST /models/{name}/predict``, ``/v2/models/{name}/infer``, ``/v1/models/{name}:predict`` and their
version and label variants), which carry most of the traffic, ``App`` skips them: ``FastPath`` matches the path
against those routes' own patterns (``Route.matches``, as the router would, and only those routes the router
would try first) and hands the request to a second instance of the same middleware stack (request context,
CORS, authentication: the same classes, the same settings, the same shared state; authentication
left out when it is off, as it then only passes these routes' requests on), whose innermost
app is ``_Dispatch``: it makes the authentication and rate-limit layers' checks itself when they are the innermost
(``AuthMiddleware.check``, its refusal rendered by ``AuthMiddleware.refuse`` as the layer renders it, and
``RateLimitMiddleware.admit_key``, in the layers' places: two coroutines less a request with a key), puts the match
in the scope as the router does, runs the route's model-access guard (``http/routing._ModelGuard.check``) and
awaits the handler and its response; without a key in the scope neither the rate limit nor the guard has anything
to do, and neither is called (nor the guard for a key without a model list).

Nothing is implemented twice. An error a handler or the guard raises is rendered by ``_Dispatch`` with the app's
own exception handlers (``http/errors.py``), the ones Starlette's exception middleware calls, in the route's
error style (in the scope, as after routing), and its response goes out through the middleware as the slow
path's does (CORS adds its headers to it); an error no handler takes goes up to the request-context
middleware, as it does from Starlette's stack. A refusal on the head (``DataPlane.admit``: 503) is such a
handler's error, raised after authentication, the rate limit and the guard: it reveals nothing a 401 or 404 hides.
Every other request (another route, a method the route does not take, a path no inference route matches) goes
through Starlette's stack unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ModelAPIError
from ..security.auth import AuthMiddleware
from ..security.limits import RateLimitMiddleware
from ..security.principal import SCOPE_KEY, Principal
from .routing import ProtocolRoute, _ModelGuard

#: the scope key of a fast-path match: the route and the child scope its ``matches`` returned
_MATCHED = "modelapi.matched"
#: ``Match``'s members, read once: an enum class's attribute read takes CPython's slow path (``EnumType``
#: defines ``__getattr__`` in 3.11), on every request
_FULL, _PARTIAL = Match.FULL, Match.PARTIAL
#: how many full matches ``FastPath`` keeps (the served models' inference paths, a few each)
_MATCHES_KEPT = 256
#: the longest path whose match ``FastPath`` keeps: a model's name is short, and the cache is filled before
#: authentication, by any client (256 heads of 64 KiB would pin ~30 MB a worker)
_PATH_KEPT_MAX = 512


def fast_routes(routes: Sequence[BaseRoute]) -> list[ProtocolRoute]:
    """The inference routes the router tries first (the leading run of them), each with an async handler and no
    body limit of its own: those a request can be dispatched to without the router deciding otherwise."""
    fast: list[ProtocolRoute] = []
    for route in routes:
        if not (isinstance(route, ProtocolRoute) and route.inference):
            break  # the router tries the rest in order: a route after this one may be shadowed by it
        if route.body_limit is None and inspect.iscoroutinefunction(route.endpoint):
            fast.append(route)
        else:
            break
    return fast


class FastPath:
    """Sends a request one of ``routes`` takes (method included) to ``fast``, anything else to ``slow``."""

    def __init__(self, slow: ASGIApp, fast: ASGIApp, routes: Sequence[ProtocolRoute]) -> None:
        self.slow = slow
        self.fast = fast
        # the literal end of each route's path ("/predict", "/infer", ":predict"): a path that does not end so
        # cannot match the route's pattern, which is not tried then
        self.routes = tuple((route.path[route.path.rfind("}") + 1 :], route) for route in routes)
        self.tails = tuple({tail for tail, _ in self.routes})
        #: the full matches of recent (path, method, root path)s: the route and the child scope it made. A route's
        #: match depends on nothing else (without ``path_params`` already in the scope), and at one connection
        #: the same path comes again and again; the pattern, its converters and the child scope cost more than
        #: the two dict copies a hit makes. Bounded: the paths are the clients'
        self._matched: dict[tuple[str, str, str], tuple[ProtocolRoute, Scope]] = {}

    def pick(self, scope: Scope) -> ASGIApp:
        """The stack that serves ``scope``: ``fast`` for a request an inference route takes (the match left in the
        scope for ``_Dispatch``), else ``slow``. A plain call, not a layer: the caller awaits what it returns."""
        if scope["type"] == "http" and (path := scope["path"]).endswith(self.tails):
            key = (path, scope["method"], scope.get("root_path", ""))
            hit = self._matched.get(key)
            if hit is not None and "path_params" not in scope:
                route, child = hit
                # copies: the request's scope takes the child's entries, and a handler may change its parameters
                scope[_MATCHED] = (route, {**child, "path_params": {**child["path_params"]}})
                return self.fast
            for tail, route in self.routes:
                if not path.endswith(tail):
                    continue
                match, child = route.matches(scope)
                if match is _FULL:
                    if "path_params" not in scope and len(path) <= _PATH_KEPT_MAX:
                        if len(self._matched) >= _MATCHES_KEPT:
                            self._matched.clear()
                        self._matched[key] = (route, {**child, "path_params": {**child["path_params"]}})
                    scope[_MATCHED] = (route, child)
                    return self.fast
                if match is _PARTIAL:
                    break  # the router looks further for a route taking this method, and answers 405 if none
        return self.slow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.pick(scope)(scope, receive, send)


class _Dispatch:
    """The innermost app of the fast path: the router's, ``request_response``'s and the exception middleware's
    work for one matched route. ``handlers``: the app's exception handlers by exception class (those Starlette's
    exception middleware takes: not ``Exception``'s, nor a status code's)."""

    def __init__(self, router: Router, handlers: Mapping[Any, Callable[..., Any]]) -> None:
        self.router = router
        self.handlers = {
            cls: handler
            for cls, handler in handlers.items()
            if isinstance(cls, type) and issubclass(cls, Exception) and cls is not Exception
        }
        #: the rate-limit and authentication layers this app stands in for (``App.build_middleware_stack``): their
        #: checks, made here
        self.rate_limit: RateLimitMiddleware | None = None
        self.auth: AuthMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = self.auth
        if auth is not None:
            # the authentication layer's decision, as the layer makes it: its refusal rendered by it, unrouted
            try:
                waiting = auth.check(scope)
                if waiting is not None:
                    await waiting
            except ModelAPIError as exc:
                await auth.refuse(scope, receive, send, exc)
                return
        # a key (security/principal.SCOPE_KEY): its rate limit, as the layer would (its 429 raised to the request
        # context, unrendered here), and its model list; without one neither has anything to check
        principal: Principal | None = scope.get(SCOPE_KEY)  # one only authentication puts there
        if principal is not None and self.rate_limit is not None:
            waiting = self.rate_limit.admit_key(principal, scope)
            if waiting is not None:
                await waiting
        route, child = scope.pop(_MATCHED)
        scope.setdefault("router", self.router)
        scope["route"] = route
        scope.update(child)  # endpoint, path_params, the error style: as the router leaves them
        request = Request(scope, receive, send)
        try:
            if principal is not None and principal.models is not None:  # a key without a model list: every model
                guard = route.app
                if isinstance(guard, _ModelGuard):
                    guard.check(scope)
            response = await route.endpoint(request)
        except Exception as exc:
            # rendered here, inside the middleware, as Starlette's exception middleware does: the response goes
            # out through CORS and the others like any answer (raised further, it would miss their headers)
            handler = next((self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers), None)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


class App(Starlette):
    """Starlette, with the inference routes dispatched by ``FastPath``."""

    def entry(self, scope: Scope) -> ASGIApp:
        """What ``__call__`` awaits for ``scope`` (the scope's ``app`` set, as Starlette sets it): a caller that
        already is an ASGI layer (``http/lifecycle.py``) awaits it itself, one coroutine less per request."""
        scope["app"] = self
        stack = self.middleware_stack
        if stack is None:
            stack = self.middleware_stack = self.build_middleware_stack()
        return stack.pick(scope) if type(stack) is FastPath else stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.entry(scope)(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        slow = super().build_middleware_stack()
        routes = fast_routes(self.router.routes)
        if not routes:
            return slow
        dispatch = _Dispatch(self.router, self.exception_handlers)
        fast: Any = dispatch
        paths = [route.path for route in routes]
        for cls, args, kwargs in reversed(self.user_middleware):
            layer = cls(fast, *args, **kwargs)
            if fast is dispatch and isinstance(layer, RateLimitMiddleware):
                # the innermost layer: _Dispatch makes its check itself, one coroutine less a request
                dispatch.rate_limit = layer
                continue
            if fast is dispatch and isinstance(layer, AuthMiddleware) and layer.auth.store is not None:
                # authentication on, the innermost layer left (outside the rate limit): its check made by _Dispatch
                # too, and its refusals rendered by it, as the layer would
                dispatch.auth = layer
                continue
            # authentication off: its layer would only await the next one for these routes (the slow stack keeps
            # it: it refuses the management routes there)
            if not (isinstance(layer, AuthMiddleware) and layer.passes(paths)):
                fast = layer
        return FastPath(slow, fast, routes)
