"""MetricsObserver: the observer seam's events (and the job service's calls) as Prometheus metrics.

Subscribe one per worker, after ``metrics.setup``: ``repository.events.subscribe(MetricsObserver())``.

The per-request events (started, finished, rejected, batch run) are only tallied here, in plain Python: a
dict keyed by the label tuple holding counts, sums and histogram bucket counts. ``flush()`` adds the tallies
to the prometheus-client values (in multiprocess mode: the worker's memory-mapped files), and runs at most
once a second from the sampler loop and before every scrape this worker answers (``runtime.render`` flushes
every observer of the process). A request therefore costs a few dict operations instead of a dozen value
updates (each a lock, or a write into a mapped file); a scrape answered by another worker shows this
worker's counts at most a second late, and a worker killed with SIGKILL loses at most its last second.
Model state changes and job calls are rare and go straight to the values.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from typing import Any

from ..events import BatchRun, ModelStateChanged, Observer, RequestFinished, RequestRejected, RequestStarted
from .catalog import ROWS_BUCKETS, SECONDS_BUCKETS
from .jobs import JobsObserver
from .runtime import families, register_flusher

STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING", "UNLOADED")
#: states a version handle is in while it exists, most significant first (what the gauge shows)
_LIVE = ("READY", "LOADING", "UNLOADING")
_NO_BUCKETS = len(SECONDS_BUCKETS) + 1  # the last one is +Inf
_ROW_BUCKETS = len(ROWS_BUCKETS) + 1


class _Tally:
    """What one (model, version, protocol, status class) did since the last flush; ``version``: that version's
    entry (entries are never dropped), so that a request finding its tally need not look it up too."""

    __slots__ = (
        "compute",
        "compute_sum",
        "count",
        "duration",
        "duration_sum",
        "queue",
        "queue_sum",
        "rows",
        "success_s",
        "version",
    )

    def __init__(self, version: _Version) -> None:
        self.version = version
        self.count = 0
        self.rows = 0
        self.success_s = 0.0
        self.duration_sum = 0.0
        self.queue_sum = 0.0
        self.compute_sum = 0.0
        self.duration = [0] * _NO_BUCKETS
        self.queue = [0] * _NO_BUCKETS
        self.compute = [0] * _NO_BUCKETS


class _BatchTally:
    __slots__ = ("buckets", "count", "rows")

    def __init__(self) -> None:
        self.count = 0
        self.rows = 0
        self.buckets = [0] * _ROW_BUCKETS


class _Version:
    """What this worker knows of one (model, version): its handles by state, the state the gauge shows, its
    calls in flight and when it last answered."""

    __slots__ = ("calls", "handles", "last", "pushed_calls", "pushed_last", "shown", "terminal")

    def __init__(self) -> None:
        self.handles: Tally[str] = Tally()
        self.terminal: str | None = None
        self.shown: str | None = None
        self.calls = 0  # started and not finished, as this observer saw them (never below 0)
        self.pushed_calls = -1  # the series is written at the first flush, 0 or not
        self.last = 0.0
        self.pushed_last = 0.0


def _add_histogram(child: Any, total: float, buckets: list[int]) -> None:
    """What ``observe`` would have done for each tallied value (prometheus-client keeps per-bucket counts, made
    cumulative when collected)."""
    child._sum.inc(total)
    values = child._buckets
    for i, n in enumerate(buckets):
        if n:
            values[i].inc(n)


class MetricsObserver(Observer, JobsObserver):
    def __init__(self) -> None:
        self._f = families()
        self._tallies: dict[tuple[str, str, str, int], _Tally] = {}
        self._batches: dict[tuple[str, str], _BatchTally] = {}
        self._rejected: dict[tuple[str, str, str], int] = {}
        self._versions: dict[tuple[str, str], _Version] = {}
        self._ever_ready: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}
        register_flusher(self)

    def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = _Version()
        return found

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # requests: tallied ------------------------------------------------------------------------------------
    def request_started(self, event: RequestStarted) -> None:
        entry = self._versions.get((event.model, event.version))
        if entry is None:
            entry = self._version(event.model, event.version)
        entry.calls += 1

    def request_finished(self, event: RequestFinished) -> None:
        klass = event.status // 100
        key = (event.model, event.version, event.protocol, klass)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(self._version(event.model, event.version))
        tally.count += 1
        seconds = event.duration_s
        tally.duration_sum += seconds
        tally.duration[bisect_left(SECONDS_BUCKETS, seconds)] += 1
        entry = tally.version
        if klass == 2:
            tally.rows += event.rows
            tally.success_s += seconds
            tally.queue_sum += event.queue_s
            tally.queue[bisect_left(SECONDS_BUCKETS, event.queue_s)] += 1
            tally.compute_sum += event.compute_s
            tally.compute[bisect_left(SECONDS_BUCKETS, event.compute_s)] += 1
            entry.last = time.time()
        if entry.calls > 0:  # a call started before this observer subscribed is not counted
            entry.calls -= 1

    def request_rejected(self, event: RequestRejected) -> None:
        key = (event.model or "", event.protocol, event.reason)
        self._rejected[key] = self._rejected.get(key, 0) + 1

    def batch_run(self, event: BatchRun) -> None:
        key = (event.model, event.version)
        tally = self._batches.get(key)
        if tally is None:
            tally = self._batches[key] = _BatchTally()
        tally.count += 1
        tally.rows += event.rows
        tally.buckets[bisect_left(ROWS_BUCKETS, event.rows)] += 1

    # the values -------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Add what was tallied since the last flush to the prometheus-client values (on the event loop)."""
        f = self._f
        tallies, self._tallies = self._tallies, {}
        for (model, version, protocol, klass), t in tallies.items():
            self._child(f.requests, model, version, protocol, f"{klass}xx").inc(t.count)
            _add_histogram(self._child(f.duration, model, version, protocol), t.duration_sum, t.duration)
            if klass == 2:
                self._child(f.rows, model, version, protocol).inc(t.rows)
                self._child(f.success_seconds, model, version, protocol).inc(t.success_s)
                _add_histogram(self._child(f.queue_wait, model, version, protocol), t.queue_sum, t.queue)
                _add_histogram(self._child(f.compute, model, version, protocol), t.compute_sum, t.compute)
        batches, self._batches = self._batches, {}
        for (model, version), b in batches.items():
            self._child(f.batches, model, version).inc(b.count)
            _add_histogram(self._child(f.batch_rows, model, version), float(b.rows), b.buckets)
        rejected, self._rejected = self._rejected, {}
        for labels, n in rejected.items():
            self._child(f.rejected, *labels).inc(n)
        for (model, version), entry in self._versions.items():
            if entry.calls != entry.pushed_calls:
                self._child(f.inflight, model, version).set(entry.calls)
                entry.pushed_calls = entry.calls
            if entry.last != entry.pushed_last:
                self._child(f.last_request, model, version).set(entry.last)
                entry.pushed_last = entry.last

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
