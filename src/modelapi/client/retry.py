"""Sending one request until it is answered: retries, backoff, Retry-After and the deadline, without I/O.

``exchange`` is a generator that yields what to do (``Send`` this request with this timeout, ``Sleep`` this
long) and receives what happened (the ``httpx.Response``, or the ``httpx.TransportError`` raised). The sync and
async clients each drive it with a loop of a few lines (``Client._run``, ``AsyncClient._run``), so the policy
is written once and its tests need no network, no real clock and no real sleep.

The policy:

- retried: connection failures (refused, reset, DNS, a connection dropped before the answer), 429 and 503;
  nothing else, so a 4xx naming a bad value or a 500 comes back at once;
- the wait before retry n (0-based) is "full jitter": uniform in [0, min(max_backoff, backoff * 2**n)],
  which spreads clients that failed together; a ``Retry-After`` (seconds or an HTTP date) is honoured as the
  least wait;
- at most ``retries`` retries, all within ``deadline`` seconds of the first attempt: a wait that would end
  past the deadline is not taken, the last answer (or error) is reported instead; each attempt's timeout is
  ``timeout``, cut to what is left of the deadline;
- a read timeout is not retried: the server may still be working on the request, and a second copy would
  only add to its load. Every call the client makes may be repeated safely (predictions change nothing; a
  job submission carries an ``Idempotency-Key``, so the server returns the same job for a repeat).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import httpx

from .errors import ClientTimeoutError, ConnectionFailedError

RETRY_STATUSES = frozenset({429, 503})
#: failures where the request surely or possibly never reached the server's application
_RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Request:
    """One HTTP request, as data. ``file``: a body streamed from disk, opened again for each attempt.
    ``sink``: a successful answer's body is streamed into this file (written whole, then renamed into place)
    instead of being read into memory."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    file: Path | None = None
    params: dict[str, str] | None = None
    sink: Path | None = None


@dataclass(frozen=True)
class Send:
    request: Request
    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


Op: TypeAlias = Send | Sleep
#: a step of the client's logic: yields operations, receives their outcomes, returns T
Steps: TypeAlias = Generator[Op, Any, Any]


@dataclass
class RetryPolicy:
    """How hard one call tries. ``clock`` and ``rng`` are injectable so tests are exact."""

    timeout: float = 60.0
    retries: int = 4
    deadline: float = 120.0
    backoff: float = 0.25
    max_backoff: float = 10.0
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = random.Random()  # noqa: S311 (jitter spreads retries; nothing secret depends on it)
        for name in ("timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)!r}")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")

    def wait(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): full jitter, at least ``retry_after``."""
        assert self.rng is not None
        jitter = self.rng.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**retry))
        return max(jitter, retry_after or 0.0)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds: a number of seconds, or an HTTP date (RFC 9110); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def exchange(
    request: Request, policy: RetryPolicy, *, retry: bool = True, origin: str = ""
) -> Generator[Op, Any, httpx.Response]:
    """Send ``request`` until an answer that is not retried, and return it (whatever its status).

    Raises ``ConnectionFailedError`` when the server stays unreachable, ``ClientTimeoutError`` on a read
    timeout or when the deadline has passed. ``retry=False``: one attempt (a probe such as ``ready()``).
    ``origin``: the server's URL, for the messages."""
    start = policy.clock()
    what = f"{request.method} {origin}{request.path}"
    attempt = 0
    while True:
        left = policy.deadline - (policy.clock() - start)
        if left <= 0:
            raise ClientTimeoutError(f"{what}: no answer within the deadline of {policy.deadline:g} s")
        outcome = yield Send(request, min(policy.timeout, left))
        retry_after: float | None = None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRY_STATUSES or not retry or attempt >= policy.retries:
                return outcome
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
        elif isinstance(outcome, httpx.TimeoutException) and not isinstance(outcome, httpx.ConnectTimeout):
            raise ClientTimeoutError(
                f"{what}: no answer within {min(policy.timeout, left):g} s (timeout={policy.timeout:g})"
            ) from outcome
        elif not isinstance(outcome, _RETRY_ERRORS) or not retry or attempt >= policy.retries:
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise ConnectionFailedError(f"{what}: cannot reach the server{tries}: {_describe(outcome)}") from outcome
        pause = policy.wait(attempt, retry_after)
        if policy.clock() - start + pause >= policy.deadline:
            if isinstance(outcome, httpx.Response):  # the server's own answer says more than a timeout would
                return outcome
            raise ConnectionFailedError(
                f"{what}: cannot reach the server, and the deadline of {policy.deadline:g} s leaves no time for "
                f"another attempt: {_describe(outcome)}"
            ) from outcome
        attempt += 1
        yield Sleep(pause)


def _describe(error: BaseException | None) -> str:
    text = str(error) if error is not None else ""
    return text or type(error).__name__
