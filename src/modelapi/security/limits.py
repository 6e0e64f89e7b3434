"""Limits on what one request, one API key and one model may take from a worker.

- JSON limits travel with each call (``context.JsonLimits`` in the ``CallContext``; ``jsonutil.loads`` takes
  them as an argument), and the per-model in-flight gate and the inference timeout belong to the data plane,
  which applies them to every front end (``gate.py``, ``dataplane.py``).
- ``KeyLimits``: a worker's per-key admission, shared by the HTTP middleware (``RateLimitMiddleware``, inside
  the authentication middleware, which names the key) and gRPC's authenticator, so a key has one rate over
  both: a token bucket per API key (429 with ``Retry-After``; the server-wide ``rate_limit`` is per worker
  process: with ``--workers N`` a key may send N times it), and the key's own rate limits and quotas
  (``modelapi keys create --rate/--quota``) through the meter (``meter.py``): per process, or shared by every
  process and replica with ``--redis-url``. Rows are charged once known, through ``KeyLimits.row_charger`` in
  the call's ``CallContext``. Without authentication there is no key to limit, and no rate limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import TooManyRequests
from ..events import Events, RequestRejected
from .meter import AdmitRows, Meter, Refusal, head_checks, row_checks
from .principal import SCOPE_KEY, Principal


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (``RateLimiter.wait_s`` takes them)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now


class RateLimiter:
    """One token bucket per API key. Buckets of keys idle long enough to be full again are dropped."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock or time.monotonic
        self.buckets: dict[str, TokenBucket] = {}
        self._refill_s = burst / rate
        self._sweep_at = self.clock() + max(self._refill_s, 60.0)

    def wait_s(self, key: str) -> float:
        """0 when ``key`` may go ahead (and uses up one request), else the seconds until it may."""
        now = self.clock()
        if now > self._sweep_at:
            # before the take: a bucket dropped here, idle long enough to be full again, is made full below
            refill_s = self._refill_s
            self._sweep_at = now + max(refill_s, 60.0)
            self.buckets = {k: b for k, b in self.buckets.items() if now - b.stamp < refill_s}
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        # the bucket's refill and take, here rather than in a method of its own: one call less on every request
        tokens = bucket.tokens + (now - bucket.stamp) * bucket.rate
        if tokens > bucket.burst:
            tokens = bucket.burst
        bucket.stamp = now
        if tokens >= 1:
            bucket.tokens = tokens - 1
            return 0.0
        bucket.tokens = tokens
        return (1 - tokens) / bucket.rate


class KeyLimits:
    """A worker's per-key admission, one mechanism for every front end (the HTTP middleware below, gRPC's
    authenticator): the server-wide token bucket (``rate_limit``, per process) and each key's own rate limits
    and quotas through the meter (per process, or shared with ``--redis-url``)."""

    def __init__(self, rate: float, burst: int, meter: Meter | None = None, events: Events | None = None) -> None:
        self.limiter = RateLimiter(rate, burst) if rate > 0 else None
        self.meter = meter
        self.events = events

    def metered(self, principal: Principal) -> bool:
        """Whether ``principal``'s requests go through the meter (its own limits), which may wait on Redis."""
        return bool(principal.limits) and self.meter is not None

    async def admit(self, principal: Principal, protocol: str, *, body: bool = True) -> None:
        """Count one request of ``principal`` (``body``: it may carry rows); raises ``TooManyRequests``."""
        if principal.limits and self.meter is not None:
            # only row limits and a request without a body: nothing to count
            checks = head_checks(principal.limits, rows=body)
            refusal = await self.meter.admit(principal.key_id, checks) if checks else None
            if refusal is not None:
                self._rejected(protocol)
                raise over_limit(principal, refusal)
        self.admit_now(principal, protocol)

    def admit_now(self, principal: Principal, protocol: str) -> None:
        """The server-wide token bucket alone: ``admit`` for a key without limits of its own (``metered``
        false), without a coroutine per request."""
        limiter = self.limiter
        if limiter is None:
            return
        wait = limiter.wait_s(principal.key_id)
        if wait > 0:
            raise self.over_rate(principal, protocol, wait)

    def over_rate(self, principal: Principal, protocol: str, wait: float) -> TooManyRequests:
        """The 429 for a key the token bucket refused (``wait``: the seconds until it may go ahead), counted."""
        self._rejected(protocol)
        limiter = self.limiter
        assert limiter is not None
        return TooManyRequests(
            f"API key '{principal.name}' is over its rate limit of {limiter.rate:g} requests per second "
            f"(bursts of {limiter.burst}; rate_limit); retry after the Retry-After seconds",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )

    def row_charger(self, principal: Principal | None, protocol: str) -> AdmitRows | None:
        """What the data plane calls once a request's rows are known, for a key with row limits; else ``None``."""
        meter = self.meter
        if meter is None or principal is None or not any(lim.what == "rows" for lim in principal.limits):
            return None

        async def charge(rows: int) -> None:
            refusal = await meter.admit(principal.key_id, row_checks(principal.limits, rows))
            if refusal is not None:
                self._rejected(protocol)
                raise over_limit(principal, refusal, rows)

        return charge

    def _rejected(self, protocol: str) -> None:
        events = self.events
        if events is not None and events.active:
            events.request_rejected(RequestRejected(None, protocol, "rate_limited", 429))


class RateLimitMiddleware:
    """429 with ``Retry-After`` for an API key over its limits (``KeyLimits``).

    It must sit inside the authentication middleware, which puts the key's principal in the scope, and inside
    ``RequestContextMiddleware``, which renders the ``TooManyRequests`` it raises.
    """

    def __init__(self, app: ASGIApp, *, limits: KeyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waiting = self.admit(scope)
        if waiting is not None:
            await waiting
        await self.app(scope, receive, send)

    def admit(self, scope: Scope) -> Awaitable[None] | None:
        """This layer's work for a request: raises ``TooManyRequests``, or returns what is to be awaited first (the
        meter's answer) or ``None``."""
        principal = scope.get(SCOPE_KEY)
        return self.admit_key(principal, scope) if isinstance(principal, Principal) else None

    def admit_key(self, principal: Principal, scope: Scope) -> Awaitable[None] | None:
        """``admit`` for the request's principal: ``http/fastpath._Dispatch`` calls it in place of the layer, which
        it replaces on the inference routes' stack (one coroutine less a request)."""
        limits = self.limits
        if principal.limits and limits.meter is not None:  # limits.metered(principal), inline
            return limits.admit(principal, "http", body=scope.get("method") in ("POST", "PUT"))
        limiter = limits.limiter  # limits.admit_now, inline: every keyed request's path
        if limiter is not None:
            wait = limiter.wait_s(principal.key_id)
            if wait > 0:
                raise limits.over_rate(principal, "http", wait)
        return None


def over_limit(principal: Principal, refusal: Refusal, rows: int | None = None) -> TooManyRequests:
    """429 naming the key's limit that refused, with ``Retry-After``."""
    limit = refusal.limit
    what = "quota" if limit.window_s >= 86400 else "rate limit"
    named = f"API key '{principal.name}' (mk_{principal.key_id})"
    if math.isinf(refusal.wait_s):
        return TooManyRequests(
            f"a request of {rows} rows is more than {named} may send under its {what} of {limit.words()} "
            f"({limit.spec}); send fewer rows per request",
            headers={"retry-after": str(limit.window_s)},
        )
    used = f"a request of {rows} rows would take {named}" if rows is not None else named
    return TooManyRequests(
        f"{used} over its {what} of {limit.words()} ({limit.spec}); retry after the Retry-After seconds",
        headers={"retry-after": str(max(1, math.ceil(refusal.wait_s)))},
    )


def rate_limit(limits: KeyLimits) -> Middleware:
    """``RateLimitMiddleware`` for ``create_app``'s middleware list (after the authentication middleware)."""
    return Middleware(RateLimitMiddleware, limits=limits)
