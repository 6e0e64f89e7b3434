"""MetricsObserver: the observer seam's events (and the job service's calls) as Prometheus metrics.

Subscribe one per worker, after ``metrics.setup``: ``repository.events.subscribe(MetricsObserver())``. The
labelled children a request touches are looked up once per (model, version, protocol, code) and kept, so an
event costs a dict lookup and a few increments.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from ..events import BatchRun, ModelStateChanged, Observer, RequestFinished, RequestRejected, RequestStarted
from .catalog import Families
from .jobs import JobsObserver
from .runtime import families

STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING", "UNLOADED")
#: states a version handle is in while it exists, most significant first (what the gauge shows)
_LIVE = ("READY", "LOADING", "UNLOADING")


class _Request:
    __slots__ = ("compute", "count", "duration", "queue", "rows")

    def __init__(self, f: Families, model: str, version: str, protocol: str, code: str) -> None:
        self.count = f.requests.labels(model, version, protocol, code)
        self.rows = f.rows.labels(model, version, protocol)
        self.duration = f.duration.labels(model, version, protocol)
        self.queue = f.queue_wait.labels(model, version, protocol)
        self.compute = f.compute.labels(model, version, protocol)


class _Version:
    """What this worker knows of one (model, version): its handles by state, and the state the gauge shows."""

    __slots__ = ("calls", "handles", "inflight", "shown", "terminal")

    def __init__(self, f: Families, model: str, version: str) -> None:
        self.handles: Tally[str] = Tally()
        self.terminal: str | None = None
        self.shown: str | None = None
        self.inflight = f.inflight.labels(model, version)
        self.calls = 0  # started and not finished, as this observer saw them (never below 0)


class MetricsObserver(Observer, JobsObserver):
    def __init__(self) -> None:
        self._f = families()
        self._requests: dict[tuple[str, str, str, int], _Request] = {}
        self._versions: dict[tuple[str, str], _Version] = {}
        self._ever_ready: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}

    def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = _Version(self._f, model, version)
        return found

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # requests ----------------------------------------------------------------------------------------------
    def request_started(self, event: RequestStarted) -> None:
        entry = self._version(event.model, event.version)
        entry.calls += 1
        entry.inflight.inc()

    def request_finished(self, event: RequestFinished) -> None:
        klass = event.status // 100
        key = (event.model, event.version, event.protocol, klass)
        series = self._requests.get(key)
        if series is None:
            series = self._requests[key] = _Request(self._f, *key[:3], f"{klass}xx")
        series.count.inc()
        series.duration.observe(event.duration_s)
        if klass == 2:
            series.rows.inc(event.rows)
            series.queue.observe(event.queue_s)
            series.compute.observe(event.compute_s)
        entry = self._version(event.model, event.version)
        if entry.calls > 0:  # a call started before this observer subscribed is not counted
            entry.calls -= 1
            entry.inflight.dec()

    def request_rejected(self, event: RequestRejected) -> None:
        self._child(self._f.rejected, event.model or "", event.protocol, event.reason).inc()

    def batch_run(self, event: BatchRun) -> None:
        self._child(self._f.batches, event.model, event.version).inc()
        self._child(self._f.batch_rows, event.model, event.version).observe(event.rows)

    # model versions ----------------------------------------------------------------------------------------
    def model_state_changed(self, event: ModelStateChanged) -> None:
        model, version, state, previous = event.model, event.version, str(event.state), event.previous
        entry = self._version(model, version)
        if previous is not None and entry.handles[str(previous)] > 0:
            entry.handles[str(previous)] -= 1
        if state in _LIVE:
            entry.handles[state] += 1
        else:
            entry.terminal = state
        if state == "READY" and previous == "LOADING":
            self._child(self._f.loads, model, version).inc()
            if model in self._ever_ready:
                self._child(self._f.reloads, model, version).inc()
            self._ever_ready.add(model)
        elif state == "UNAVAILABLE" and previous == "LOADING":
            self._child(self._f.load_failures, model, version).inc()
        shown = next((s for s in _LIVE if entry.handles[s] > 0), entry.terminal or state)
        if shown != entry.shown:
            for s in STATES:  # every state written, so the series read 0/1 like an enum
                self._child(self._f.state, model, version, s).set(1 if s == shown else 0)
            entry.shown = shown

    # jobs (called by the job service; see JobsObserver) ----------------------------------------------------
    def job_submitted(self, model: str) -> None:
        self._child(self._f.jobs_submitted, model).inc()

    def job_rows(self, model: str, rows: int) -> None:
        self._child(self._f.jobs_rows, model).inc(rows)

    def job_finished(self, model: str, state: str) -> None:
        self._child(self._f.jobs_finished, model, state).inc()
