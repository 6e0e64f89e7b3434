"""Limits on what one request, one API key and one model may take from a worker.

- JSON limits travel with each call (``context.JsonLimits`` in the ``CallContext``; ``jsonutil.loads`` takes
  them as an argument), and the per-model in-flight gate and the inference timeout belong to the data plane,
  which applies them to every front end (``gate.py``, ``dataplane.py``).
- ``RateLimitMiddleware``: a token bucket per API key (429 with ``Retry-After``), inside the authentication
  middleware, which names the key. Without authentication there is no key to limit, and no rate limit.

Every limit is per worker process: with ``--workers N`` a key may send N times ``rate_limit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import TooManyRequests
from ..events import Events, RequestRejected
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
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: int,
        events: Events | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.events = events
        # ``limiter``: buckets shared with another front end of this worker (gRPC), so a key has one rate
        self.limiter = limiter if limiter is not None else RateLimiter(rate, burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(SCOPE_KEY)
        if self.limiter is None or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        wait = self.limiter.wait_s(principal.key_id)
        if wait > 0:
            if self.events is not None and self.events.active:
                self.events.request_rejected(RequestRejected(None, "http", "rate_limited", 429))
            raise TooManyRequests(
                f"API key '{principal.name}' is over its rate limit of {self.limiter.rate:g} requests per second "
                f"(bursts of {self.limiter.burst}; rate_limit); retry after the Retry-After seconds",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        await self.app(scope, receive, send)


def rate_limit(rate: float, burst: int, events: Events | None = None, limiter: RateLimiter | None = None) -> Middleware:
    """``RateLimitMiddleware`` for ``create_app``'s middleware list (after the authentication middleware)."""
    return Middleware(RateLimitMiddleware, rate=rate, burst=burst, events=events, limiter=limiter)
