"""API key authentication as one pure ASGI middleware, and the rule that decides whether it is on.

When on, every request but the health probes needs a key, sent as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; the middleware looks it up in the key store (at most every ``key_cache_s``) and puts the key's
``Principal`` in ``scope["modelapi.principal"]``. A key in the query string is refused (401), since URLs end
up in logs and browser histories. Which models a key may use is decided after routing, from the matched
route's model name (``http/routing.guard``), not here from the path.

Public paths (the protocols' ``public_paths``: the docs and playground pages and their static assets) load
without a key, since a browser cannot send one when it opens a page and they hold no data: the key is entered
in the page, which sends it with its own API calls. A key sent to a public path is still checked; without one
the request is anonymous (``principal.ANONYMOUS_KEY``) and sees no models.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import Forbidden, ModelAPIError, Unauthorized
from ..events import Events, RequestRejected
from ..settings import Settings, is_loopback
from .keys import InvalidKey, KeyStore
from .principal import ANONYMOUS_KEY, SCOPE_KEY

log = logging.getLogger("modelapi.auth")

#: open to everyone, so that load balancers and orchestrators can probe without a key
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping", "/health"})
#: management routes: registered only with ``management_routes``, and then for admin keys only
MANAGEMENT_PATHS = frozenset({"/v2/repository/index"})
MANAGEMENT_PREFIX = "/v2/repository/"


class PublicPaths:
    """Path templates that load without a key: ``{}`` stands for one path segment, a final ``/*`` for one
    file name under the folder (``/docs/assets/*``)."""

    def __init__(self, templates: Iterable[str] = ()) -> None:
        self.templates = tuple(templates)
        patterns = []
        for template in self.templates:
            folder = template.endswith("/*")
            text = re.escape(template[:-2] if folder else template).replace(re.escape("{}"), "[^/]+")
            patterns.append(text + ("/[^/]+" if folder else ""))
        self._match = re.compile("(?:" + "|".join(patterns) + r")\Z").match if patterns else None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._match is not None and self._match(path) is not None

    @property
    def match(self) -> Callable[[str], object] | None:
        """What ``in`` asks, for a path known to be a string: a truthy answer for a public path; ``None`` when
        no path is public. The authentication middleware calls it on every request."""
        return self._match


def is_management(path: str) -> bool:
    """The V2 repository extension: index, load, unload."""
    return path.startswith(MANAGEMENT_PREFIX)


#: query parameters that would carry a key, refused so that keys never land in access logs
QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "x-api-key", "access_token"})
_KEY_IN_VALUE = re.compile(r"mk_[0-9a-f]{8}_")
CHALLENGE = 'Bearer realm="modelapi"'
MISSING = "this server needs an API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


@dataclass
class Auth:
    """Whether authentication is on, and the store keys are looked up in."""

    store: KeyStore | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.store is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Auth:
        """The rule (docs/security.md): off when asked for (on a non-loopback address only with
        ``insecure_no_auth``); on when asked for; otherwise on for a non-loopback address, and on loopback only
        when the key store holds a key (revoked and expired ones count)."""
        loopback = is_loopback(settings.host)
        if settings.insecure_no_auth or settings.auth == "off":
            if not loopback:
                log.warning(
                    "authentication is OFF on %s, which other machines can reach: anyone who can connect can "
                    "use every model (--insecure-no-auth)",
                    settings.host,
                )
            return cls(None, "turned off")
        if settings.auth == "on" or not loopback:
            store = KeyStore.open(settings.state_dir, settings.database_url, cache_s=settings.key_cache_s)
            why = "--auth on" if settings.auth == "on" else f"{settings.host} is not a loopback address"
            if not store.has_keys():
                log.warning("authentication is on (%s) but no key exists: create one with `modelapi keys create`", why)
            return cls(store, why)
        existing = KeyStore.existing(settings.state_dir, settings.database_url, cache_s=settings.key_cache_s)
        if existing is not None and existing.has_keys():
            return cls(existing, "the key store holds keys")
        if existing is not None:
            existing.close()
        return cls(None, "loopback address and no keys")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Auth,
        management: bool = False,
        admin_paths: frozenset[str] = frozenset(),
        public_paths: PublicPaths | None = None,
        events: Events | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.management = management
        #: the registered protocols' ``public_paths``: pages and their assets, open without a key
        self.public_paths = public_paths or PublicPaths()
        self._public = self.public_paths.match
        #: the registered protocols' ``admin_paths`` (``GET /metrics``): admin keys only when authentication is on
        self.admin_paths = admin_paths
        self.events = events  # told of every refusal (metrics count them by reason)
        # SQLite answers a primary-key lookup in microseconds; a network database goes to a thread
        self.in_thread = auth.store is not None and not auth.store.url.startswith("sqlite")

    def passes(self, paths: Iterable[str]) -> bool:
        """Whether every request to these route paths goes through this layer untouched: authentication is off
        (no key store, for the process's life) and none of them is a management path, so the layer would only
        await the app (``http/fastpath.py`` leaves it out of the inference routes' stack then)."""
        return self.auth.store is None and not (self.management and any(map(is_management, paths)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.auth.store is None:
            if scope["path"] in OPEN_PATHS or not (self.management and is_management(scope["path"])):
                await self.app(scope, receive, send)
                return
            # loading and unloading models is never open, not even on loopback
            await self.refuse(
                scope,
                receive,
                send,
                Forbidden(
                    f"{scope['path']} needs an API key with the admin scope, and authentication is off: create "
                    "one with 'modelapi keys create --name NAME --scope admin' and restart the server"
                ),
            )
            return
        try:
            waiting = self.check(scope)
            if waiting is not None:
                await waiting
        except ModelAPIError as exc:
            await self.refuse(scope, receive, send, exc)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> Awaitable[None] | None:
        """This layer's decision on an HTTP request while authentication is on: the key's principal put in the
        scope (a request without a key to a public path marked anonymous, one to an open path let through), or
        the ``ModelAPIError`` it is answered with raised (``refuse`` renders it); returns what is to be awaited
        first where the key is looked up in a thread (a network database), which decides the same way.
        ``http/fastpath._Dispatch`` calls it in the layer's place on the inference routes' stack."""
        path = scope["path"]
        if path in OPEN_PATHS:
            return None
        if scope.get("query_string"):
            _refuse_query_key(scope)
        # the key: the last Authorization and X-API-Key headers
        authorization: bytes | None = None
        api_key: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-api-key":
                api_key = value
        key: str | None = None
        if api_key is None and authorization is not None and authorization[:7] == b"Bearer ":
            # the usual header alone: what presented_key answers for it, without its general parsing
            key = authorization[7:].decode("latin-1").strip()
        if not key:
            key = _presented(authorization, api_key)
        if key is None:
            # a public path (a page, its assets) loads without a key: asked only of a request without one, since
            # with a key every path is checked the same way
            public = self._public
            if public is not None and public(path):
                scope[ANONYMOUS_KEY] = True
                return None
            raise Unauthorized(MISSING, headers={"www-authenticate": CHALLENGE})
        store = self.auth.store
        assert store is not None
        try:
            if self.in_thread:  # a key looked up less than key_cache_s ago needs no thread
                principal = store.cached(key)
                if principal is None:
                    return self._looked_up(scope, path, key)
            else:  # on SQLite the lookup is answered here (by the cache, or in microseconds)
                principal = store.authenticate(key)  # the request's time is read there, only for a key that expires
        except InvalidKey as exc:
            raise _invalid(exc) from None
        if (path.startswith(MANAGEMENT_PREFIX) or path in self.admin_paths) and not principal.has_scope("admin"):
            raise Forbidden(f"{path} needs a key with the admin scope; key mk_{principal.key_id} has not")
        scope[SCOPE_KEY] = principal
        return None

    async def _looked_up(self, scope: Scope, path: str, key: str) -> None:
        """``check``'s end for a key looked up in a thread (a network database)."""
        store = self.auth.store
        assert store is not None
        try:
            principal = await run_in_threadpool(store.authenticate, key, time.time())
        except InvalidKey as exc:
            raise _invalid(exc) from None
        if (path.startswith(MANAGEMENT_PREFIX) or path in self.admin_paths) and not principal.has_scope("admin"):
            raise Forbidden(f"{path} needs a key with the admin scope; key mk_{principal.key_id} has not")
        scope[SCOPE_KEY] = principal

    async def refuse(self, scope: Scope, receive: Receive, send: Send, exc: ModelAPIError) -> None:
        """The answer to a request ``check`` refused, and its event."""
        from ..http.errors import handle_modelapi_error

        if self.events is not None and self.events.active:
            reason = "unauthenticated" if exc.status == 401 else "forbidden"
            self.events.request_rejected(RequestRejected(None, "http", reason, exc.status))
        response = await handle_modelapi_error(Request(scope), exc)
        await response(scope, receive, send)


def _invalid(exc: InvalidKey) -> Unauthorized:
    return Unauthorized(exc.reason, headers={"www-authenticate": f'{CHALLENGE}, error="invalid_token"'})


def _presented(authorization: bytes | None, api_key: bytes | None) -> str | None:
    """``presented_key`` for the raw header values."""
    return presented_key(
        None if authorization is None else authorization.decode("latin-1"),
        None if api_key is None else api_key.decode("latin-1"),
    )


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key in ``Authorization: Bearer <key>`` or ``X-API-Key``, the two must agree when both are sent: the
    rule for HTTP headers and gRPC metadata (``grpc/auth.py``) alike; raises ``Unauthorized``."""
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "the Authorization header must read 'Bearer <key>'", headers={"www-authenticate": CHALLENGE}
            )
        bearer = token.strip()
    api_key = None if x_api_key is None else x_api_key.strip()
    if bearer is not None and api_key is not None and bearer != api_key:
        raise Unauthorized(
            "Authorization and X-API-Key carry different keys; send one", headers={"www-authenticate": CHALLENGE}
        )
    return bearer or api_key or None


def _refuse_query_key(scope: Scope) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.lower() in QUERY_KEY_NAMES or _KEY_IN_VALUE.search(value) or _KEY_IN_VALUE.search(name):
            raise Unauthorized(
                f"API keys are not accepted in the query string (parameter '{name[:40]}'): URLs are logged; send "
                "the key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>', and revoke this one if it "
                "was shared",
                headers={"www-authenticate": CHALLENGE},
            )
