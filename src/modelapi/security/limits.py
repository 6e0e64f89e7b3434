"""Limits on what one request, one API key and one model may take from a worker.

- JSON limits travel with each call (``context.JsonLimits`` in the ``CallContext``; ``jsonutil.loads`` takes
  them as an argument), and the per-model in-flight gate and the inference timeout belong to the data plane,
  which applies them to every front end (``gate.py``, ``dataplane.py``).
- ``RateLimitMiddleware``: a token bucket per API key (429 with ``Retry-After``), inside the authentication
  middleware, which names the key. Without authentication there is no key to limit, and no rate limit.
  The server-wide ``rate_limit`` is per worker process: with ``--workers N`` a key may send N times it.
- The same middleware applies a key's own rate limits and quotas (``modelapi keys create --rate/--quota``)
  through the meter (``meter.py``): per process, or shared by every process and replica with ``--redis-url``.
  Rows are charged once known, through ``row_charger`` in the call's ``CallContext``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import TooManyRequests
from ..events import Events, RequestRejected
from .meter import AdmitRows, Meter, Refusal, head_checks, row_checks
from .principal import SCOPE_KEY, Principal


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. ``take`` answers 0, or seconds until one is due."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per API key. Buckets of keys idle long enough to be full again are dropped."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock or time.monotonic
        self.buckets: dict[str, TokenBucket] = {}
        self._swept = self.clock()

    def wait_s(self, key: str) -> float:
        """0 when ``key`` may go ahead (and uses up one request), else the seconds until it may."""
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        refill_s = self.burst / self.rate
        if now - self._swept > max(refill_s, 60.0):
            self._swept = now
            self.buckets = {k: b for k, b in self.buckets.items() if now - b.stamp < refill_s}
        return wait


class RateLimitMiddleware:
    """429 with ``Retry-After`` for an API key over ``rate`` requests a second (bursts up to ``burst``).

    It must sit inside the authentication middleware, which puts the key's principal in the scope, and inside
    ``RequestContextMiddleware``, which renders the ``TooManyRequests`` it raises.
    """

    def __init__(
        self, app: ASGIApp, *, rate: float, burst: int, meter: Meter | None = None, events: Events | None = None
    ) -> None:
        self.app = app
        self.events = events
        self.limiter = RateLimiter(rate, burst) if rate > 0 else None
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(SCOPE_KEY)
        if not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        if principal.limits and self.meter is not None:
            # only row limits and a request without a body: nothing to count
            checks = head_checks(principal.limits, rows=scope.get("method") in ("POST", "PUT"))
            refusal = await self.meter.admit(principal.key_id, checks) if checks else None
            if refusal is not None:
                _rejected(self.events)
                raise over_limit(principal, refusal)
        limiter = self.limiter
        wait = limiter.wait_s(principal.key_id) if limiter is not None else 0.0
        if limiter is not None and wait > 0:
            _rejected(self.events)
            raise TooManyRequests(
                f"API key '{principal.name}' is over its rate limit of {limiter.rate:g} requests per second "
                f"(bursts of {limiter.burst}; rate_limit); retry after the Retry-After seconds",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        await self.app(scope, receive, send)


def _rejected(events: Events | None) -> None:
    if events is not None and events.active:
        events.request_rejected(RequestRejected(None, "http", "rate_limited", 429))


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


def row_charger(meter: Meter | None, principal: Principal | None, events: Events | None) -> AdmitRows | None:
    """What the data plane calls once a request's rows are known, for a key with row limits; else ``None``."""
    if meter is None or principal is None or not any(lim.what == "rows" for lim in principal.limits):
        return None

    async def charge(rows: int) -> None:
        refusal = await meter.admit(principal.key_id, row_checks(principal.limits, rows))
        if refusal is not None:
            _rejected(events)
            raise over_limit(principal, refusal, rows)

    return charge


def rate_limit(rate: float, burst: int, events: Events | None = None, meter: Meter | None = None) -> Middleware:
    """``RateLimitMiddleware`` for ``create_app``'s middleware list (after the authentication middleware)."""
    return Middleware(RateLimitMiddleware, rate=rate, burst=burst, meter=meter, events=events)
