"""The observer seam: what happens to requests, batches and model versions, for whoever subscribes.

``Observer`` has one method per event, each a no-op, so a subscriber implements only what it needs. ``Events``
fans an event out to its subscribers; a subscriber that raises is logged and never breaks the request or load
that emitted it. A subscriber is handed only the events whose method it overrides, and emitters of the
per-request events check ``Events.active`` first, so with nobody subscribed to them (one that watches model
versions only leaves ``active`` false) an event costs one attribute read. Events are plain slotted dataclasses,
to be treated as read-only: not frozen, because building a frozen one costs about a microsecond more, and a
request emits two or three.

``PredictionsServed`` is the one event that carries data (the rows a call answered). It is built only for an
observer that overrides ``sample_rate``: ``Events.sampling`` is true only while one is subscribed, and the data
plane asks ``Events.sample_rate(model)`` and draws the rows before it copies any (the prediction log, monitor/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

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
    """Refused before any model ran it. ``reason``: overloaded (in-flight limit or expected wait and run, on the head),
    queue_time (waited past max_queue_ms, dropped unrun), early_retry (held until its Retry-After, never run),
    disconnected (the client left while it waited), rate_limited, unauthenticated, forbidden, timeout, unavailable."""

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


@dataclass(slots=True)
class PredictionsServed:
    """Rows of one answered call that a subscriber sampled: ``inputs`` and ``outputs`` hold only those rows
    (validated inputs, the outputs answered). ``key``: the API key's name, never the key; ``time``: Unix time
    of the answer; ``latency_s``: admission to the answer. Built only when ``Events.sample_rate`` asked for it."""

    model: str
    version: str
    protocol: str
    request_id: str | None
    key: str | None
    time: float
    latency_s: float
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


class Observer:
    """Subclass and override what you need. ``sample_rate``: override it (with ``predictions_served``) to be
    handed a share of the rows calls answer; an observer that does not override it is never asked."""

    def sample_rate(self, model: str) -> float:
        return 0.0

    def predictions_served(self, event: PredictionsServed) -> None:
        pass

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


_PER_REQUEST = ("request_started", "request_finished", "request_rejected", "batch_run")


def _overrides(observer: object, method: str) -> bool:
    """Whether ``observer`` does something on ``method``: not the no-op ``Observer`` gives it (a handler set on the
    instance counts, and an object that does not subclass ``Observer`` overrides whatever it has)."""
    if method in getattr(observer, "__dict__", ()):
        return True
    return getattr(type(observer), method, None) is not getattr(Observer, method) and hasattr(observer, method)


class Events(Observer):
    """Fan-out to subscribers, in subscription order (their bound methods are listed once per subscription)."""

    _METHODS = (
        "request_started",
        "request_finished",
        "request_rejected",
        "batch_run",
        "model_state_changed",
        "predictions_served",
    )

    def __init__(self, *observers: Observer) -> None:
        self._observers: list[Observer] = list(observers)
        self._bound: dict[str, list[Callable[[Any], None]]] = {}
        self._samplers: list[Callable[[str], float]] = []
        #: whether any subscriber samples rows (``Call.infer`` reads this before anything else)
        self.sampling = False
        self._rebind()

    def _rebind(self) -> None:
        self._bound = {m: [getattr(o, m) for o in self._observers if _overrides(o, m)] for m in self._METHODS}
        samplers = [o for o in self._observers if _overrides(o, "sample_rate")]
        self._samplers = [o.sample_rate for o in samplers]
        self._bound["predictions_served"] = [o.predictions_served for o in samplers]
        # the handlers of the events every request emits, for their methods' own loops (no _emit call)
        self._started = self._bound["request_started"]
        self._finished = self._bound["request_finished"]
        self._rejected = self._bound["request_rejected"]  # (each refusal under a flood emits one)
        self._batches = self._bound["batch_run"]
        self.sampling = bool(self._samplers)
        #: whether any subscriber wants the per-request events (built only then)
        self.active = any(self._bound[m] for m in _PER_REQUEST)

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
                _failed(handler, event)

    def sample_rate(self, model: str) -> float:
        """The largest share of ``model``'s rows any subscriber wants (0 with none; a sampler that raises: 0)."""
        rate = 0.0
        for sampler in self._samplers:
            try:
                rate = max(rate, sampler(model))
            except Exception:
                log.exception("observer %s failed on sample_rate", type(getattr(sampler, "__self__", sampler)))
        return rate

    def predictions_served(self, event: PredictionsServed) -> None:
        self._emit("predictions_served", event)

    # the events of every request: _emit's loop, in each (one call less per event)
    def request_started(self, event: RequestStarted) -> None:
        for handler in self._started:
            try:
                handler(event)
            except Exception:
                _failed(handler, event)

    def request_finished(self, event: RequestFinished) -> None:
        for handler in self._finished:
            try:
                handler(event)
            except Exception:
                _failed(handler, event)

    def request_rejected(self, event: RequestRejected) -> None:
        for handler in self._rejected:
            try:
                handler(event)
            except Exception:
                _failed(handler, event)

    def batch_run(self, event: BatchRun) -> None:
        for handler in self._batches:
            try:
                handler(event)
            except Exception:
                _failed(handler, event)

    def model_state_changed(self, event: ModelStateChanged) -> None:
        self._emit("model_state_changed", event)


def _failed(handler: Callable[[Any], None], event: object) -> None:
    """Log a subscriber's failure on ``event``, with its traceback (called in the ``except`` block)."""
    owner = getattr(handler, "__self__", handler)
    log.exception("observer %s failed on %s", type(owner).__name__, type(event).__name__)
