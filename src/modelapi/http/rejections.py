"""Refusals under load, counted and logged at most once a second per reason and model, as one warning.

An overload of 600 connections used to write one ERROR line per 503, tens of thousands a second, which hid
everything else in the log and cost the server time it did not have. Now the error handlers hand each refusal
(503 over ``max_inflight`` or a model not ready, 429 over the rate limit, 504 inference timeout, 413 body too
large) to ``REPORTER``, which writes::

    WARNING: model 'iris': 1,234 requests refused in the last 1.0 s (503 overloaded); the last: model 'iris'
    already has 512 requests in flight, the limit (max_inflight); retry shortly

The first refusal after a quiet second is written at once; those that follow within the second are counted and
written together when it ends (a timer on the event loop), so a burst gives one line a second per reason and
model, and none is lost. JSON lines carry ``reason``, ``status``, ``refused``, ``unlogged`` and ``model`` as
fields. Genuine server errors (500) are not refusals: they stay at ERROR with their traceback and request id.

A refusal whose access line was left out is counted as such (``refused(..., unlogged=True)``: one refused on
the head past ``access_log_refusals_per_s`` in its second, ``http/shedding.py``); the line that counts it says how
many of its refusals have none, so the log shows that lines were left out and why::

    WARNING: model 'iris': 12,345 requests refused in the last 1.0 s (503 overloaded); 12,245 of them without an
    access line (access_log_refusals_per_s); the last: ...

(``unlogged`` in JSON, 0 when the bound left none out: with the access log off no refusal has a line, and none counts).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import (
    EarlyRetry,
    InferenceTimeout,
    ModelAPIError,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    QueueTimeout,
    TooManyRequests,
)

log = logging.getLogger("modelapi.rejections")
#: the setting that leaves refusals' access lines out, named where the warning counts them
_BOUND = "access_log_refusals_per_s"

#: the refusals this reporter counts, by the ``reason`` words of ``events.RequestRejected`` and the metrics
_REASONS: tuple[tuple[type[ModelAPIError], str], ...] = (
    (QueueTimeout, "queue_time"),  # before Overloaded, whose subclass it is
    (EarlyRetry, "early_retry"),  # likewise
    (Overloaded, "overloaded"),
    (TooManyRequests, "rate_limited"),
    (InferenceTimeout, "timeout"),
    (PayloadTooLarge, "body_size"),
    (ModelNotReady, "unavailable"),
)


def reason_for(exc: ModelAPIError) -> str | None:
    """The refusal reason of ``exc``, or ``None`` when it is no refusal (a client's mistake or a server error)."""
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return None


@dataclass
class _Tally:
    status: int
    count: int = 0
    #: of ``count``, those that wrote no access line
    unlogged: int = 0
    detail: str = ""
    first_at: float = 0.0
    reported_at: float = -math.inf
    timer: asyncio.TimerHandle | None = None


class RejectionReporter:
    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._tallies: dict[tuple[str, str | None], _Tally] = {}

    def refused(self, reason: str, status: int, model: str | None, detail: str, *, unlogged: bool = False) -> None:
        """Count one refusal; write the line now if this reason and model wrote none in the last interval.
        ``unlogged``: it wrote no access line (past ``access_log_refusals_per_s``)."""
        if not self.logger.isEnabledFor(logging.WARNING):
            return
        key = (reason, model)
        tally = self._tallies.get(key)
        if tally is not None and tally.timer is not None:
            # its line is due already (the timer writes it): counted until then, no clock read (a flood's case)
            tally.count += 1
            if unlogged:
                tally.unlogged += 1
            tally.status = status
            tally.detail = detail
            return
        now = self.clock()
        if tally is None:
            tally = self._tallies[key] = _Tally(status)
        if tally.count == 0:
            tally.first_at = now
        tally.count += 1
        if unlogged:
            tally.unlogged += 1
        tally.status = status
        tally.detail = detail
        if now - tally.reported_at >= self.interval_s:
            self._report(key, tally, now)
        elif tally.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop to wait on: the next refusal or flush() writes it
            delay = tally.reported_at + self.interval_s - now
            # an empty context: the line sums many requests, so it carries no one request's id
            tally.timer = loop.call_later(delay, self._due, key, context=contextvars.Context())

    def flush(self) -> None:
        """Write every count not written yet (for tests, and shutdown)."""
        now = self.clock()
        for key, tally in self._tallies.items():
            if tally.count:
                self._report(key, tally, now)

    def _due(self, key: tuple[str, str | None]) -> None:
        tally = self._tallies.get(key)
        if tally is not None:
            tally.timer = None
            if tally.count:
                self._report(key, tally, self.clock())

    def _report(self, key: tuple[str, str | None], tally: _Tally, now: float) -> None:
        reason, model = key
        count, unlogged = tally.count, tally.unlogged
        since = tally.reported_at if tally.reported_at > -math.inf else tally.first_at
        if tally.timer is not None:
            tally.timer.cancel()
            tally.timer = None
        tally.count = tally.unlogged = 0
        tally.reported_at = now
        who = f"model '{model}': " if model else ""
        if count == 1:
            without = f", without an access line ({_BOUND})" if unlogged else ""
            text = f"{who}a request refused ({tally.status} {reason}){without}: {tally.detail}"
        else:
            without = f"; {unlogged:,} of them without an access line ({_BOUND})" if unlogged else ""
            text = (
                f"{who}{count:,} requests refused in the last {now - since:.1f} s ({tally.status} {reason})"
                f"{without}; the last: {tally.detail}"
            )
        fields = {"reason": reason, "status": tally.status, "refused": count, "unlogged": unlogged, "model": model}
        contextvars.Context().run(self.logger.warning, "%s", text, extra=fields)


#: the server's reporter (one per worker process)
REPORTER = RejectionReporter()
