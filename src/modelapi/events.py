"""The observer seam: what happens to requests, batches and model versions, for whoever subscribes.

``Observer`` has one method per event, each a no-op, so a subscriber implements only what it needs. ``Events``
fans an event out to its subscribers; a subscriber that raises is logged and never breaks the request or load
that emitted it. Emitters check ``Events.active`` first, so with nobody subscribed an event costs one attribute
read. Events are plain slotted dataclasses, to be treated as read-only: not frozen, because building a frozen
one costs about a microsecond more, and a request emits two or three.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("modelapi.events")


@dataclass(slots=True)
class RequestStarted:
    model: str
    version: str
    protocol: str
    request_id: str | None


@dataclass(slots=True)
class RequestFinished:
    """``status``: the HTTP-style status of the outcome (200, or the error's); ``queue_s``: waiting for a batch;
    ``compute_s``: the batch that served it; ``duration_s``: admission to the end of the call."""

    model: str
    version: str
    protocol: str
    status: int
    rows: int
    queue_s: float
    compute_s: float
    duration_s: float
    request_id: str | None


@dataclass(slots=True)
class RequestRejected:
    """Refused before any model ran it. ``reason``: overloaded (in-flight limit or expected wait, on the head),
    queue_time (waited past max_queue_ms, dropped unrun), disconnected (the client left while it waited),
    rate_limited, unauthenticated, forbidden, timeout, unavailable."""

    model: str | None
    protocol: str
    reason: str
    status: int


@dataclass(slots=True)
class BatchRun:
    model: str
    version: str
    rows: int
    requests: int
    seconds: float


@dataclass(slots=True)
class ModelStateChanged:
    """A version's state: LOADING, READY, UNAVAILABLE (``reason`` says why), UNLOADING, UNLOADED."""

    model: str
    version: str
    state: str
    previous: str | None
    reason: str | None = None


class Observer:
    """Subclass and override what you need."""

    def request_started(self, event: RequestStarted) -> None:
        pass

    def request_finished(self, event: RequestFinished) -> None:
        pass

    def request_rejected(self, event: RequestRejected) -> None:
        pass

    def batch_run(self, event: BatchRun) -> None:
        pass

    def model_state_changed(self, event: ModelStateChanged) -> None:
        pass


class Events(Observer):
    """Fan-out to subscribers, in subscription order (their bound methods are listed once per subscription)."""

    _METHODS = ("request_started", "request_finished", "request_rejected", "batch_run", "model_state_changed")

    def __init__(self, *observers: Observer) -> None:
        self._observers: list[Observer] = list(observers)
        self._bound: dict[str, list[Callable[[Any], None]]] = {}
        self._rebind()

    def _rebind(self) -> None:
        self._bound = {m: [getattr(o, m) for o in self._observers] for m in self._METHODS}

    @property
    def active(self) -> bool:
        return bool(self._observers)

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)
        self._rebind()

    def unsubscribe(self, observer: Observer) -> None:
        self._observers.remove(observer)
        self._rebind()

    def _emit(self, method: str, event: object) -> None:
        for handler in self._bound[method]:
            try:
                handler(event)
            except Exception:
                owner = getattr(handler, "__self__", handler)
                log.exception("observer %s failed on %s", type(owner).__name__, type(event).__name__)

    def request_started(self, event: RequestStarted) -> None:
        self._emit("request_started", event)

    def request_finished(self, event: RequestFinished) -> None:
        self._emit("request_finished", event)

    def request_rejected(self, event: RequestRejected) -> None:
        self._emit("request_rejected", event)

    def batch_run(self, event: BatchRun) -> None:
        self._emit("batch_run", event)

    def model_state_changed(self, event: ModelStateChanged) -> None:
        self._emit("model_state_changed", event)
