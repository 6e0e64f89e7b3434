"""PredictionLogger: the observer that samples answered rows into the prediction log, off the request path.

On the request path (the event loop) it does three cheap things: ``sample_rate`` (a dict lookup), queueing a
``PredictionsServed`` (or dropping it, counted, when ``log_queue_rows`` rows already wait) and tallying every
finished call per (model, version, minute): requests, and those rejected for their input (400, 413, 422).
Flattening, Arrow tables and writing happen on one writer thread per worker, which takes everything queued
every ``COMPACT_S`` (into columns, in numpy and Arrow), writes every ``log_flush_s`` or once half the queue (at
most ``BATCH_ROWS`` rows) waits, and applies retention every ``PRUNE_S``. Nothing on the request path wakes it
per call: a thread woken per call competes for the worker's core and GIL on every request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..events import ModelStateChanged, Observer, PredictionsServed, RequestFinished
from ..settings import Settings
from .policy import Policies
from .records import DAY_S, INPUTS, MODEL, TIME, VERSION, Call, Pending
from .store import LogStore, Tally

log = logging.getLogger("modelapi.monitor")
REJECTED = frozenset({400, 413, 422})
BATCH_ROWS = 10_000
PRUNE_S = 600.0
COMPACT_S = 0.1


class PredictionLogger(Observer):
    def __init__(
        self,
        settings: Settings,
        policies: Policies,
        store: LogStore,
        families: Any = None,
        left_out: Callable[[str], None] | None = None,
    ) -> None:
        self.policies = policies
        self.store = store
        #: called on the writer thread before it logs a model's rows under another set of inputs marked sensitive
        #: than before (or its first): the monitor notes when an input stopped being left out (service.py)
        self._left_out = left_out
        self._sensitive: dict[str, frozenset[str]] = {}
        self.capacity = settings.log_queue_rows
        self.flush_s = settings.log_flush_s
        self._families = families  # metrics.catalog.Families, or None with metrics off
        self._rates: dict[str, float] = {}
        # The queue is a deque the event loop appends to and the writer pops from (both atomic under the GIL),
        # and its rows are two counters, each written by one side only: no lock and no wake-up per call. The
        # writer takes what waits every COMPACT_S and writes every flush_s, or once _batch_rows rows wait (then
        # the event loop sets _wake).
        self._queue: deque[Call] = deque()  # records.Call: a tuple, which the garbage collector soon stops tracking
        self._queued = 0  # rows ever queued (the event loop's)
        self._settled = 0  # rows ever written or dropped after queueing (the writer's)
        self._batch_rows = max(1, min(BATCH_ROWS, self.capacity // 2))  # a small queue is written sooner
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()  # the request tallies
        self._tallies: dict[tuple[str, str, int], list[int]] = {}
        self._full: Counter[str] = Counter()  # rows dropped for a full queue (the event loop's)
        self._failed: Counter[str] = Counter()  # rows dropped unwritten (the writer's)
        self.written: Counter[str] = Counter()
        self._thread: threading.Thread | None = None

    # the request path (the worker's event loop) -------------------------------------------------------------
    def sample_rate(self, model: str) -> float:
        rate = self._rates.get(model)
        if rate is None:
            rate = self._rates[model] = self.policies.get(model).rate
        return rate

    def model_state_changed(self, event: ModelStateChanged) -> None:
        if event.state == "READY":
            self._rates[event.model] = self.policies.refresh(event.model).rate

    def predictions_served(self, event: PredictionsServed) -> None:
        inputs = event.inputs
        rows = len(next(iter(inputs.values()))) if inputs else 0
        if not rows:
            return
        waiting = self._queued + rows - self._settled
        if waiting > self.capacity:
            self._full[event.model] += rows
            if self._families is not None:
                self._families.log_dropped.labels(event.model).inc(rows)
            return
        self._queue.append(
            (event.model, event.version, event.protocol, event.request_id, event.key, event.time, event.latency_s,
             inputs, event.outputs)
        )  # fmt: skip
        self._queued += rows
        if waiting >= self._batch_rows:
            self._wake.set()

    def request_finished(self, event: RequestFinished) -> None:
        if not self._rates.get(event.model):
            return
        key = (event.model, event.version, int(time.time() // 60))
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = [0, 0]
            tally[0] += 1
            if event.status in REJECTED:
                tally[1] += 1

    @property
    def waiting(self) -> int:
        """Rows queued or batched and not yet written."""
        return self._queued - self._settled

    @property
    def dropped(self) -> Counter[str]:
        """Rows dropped, per model: the queue was full, or the store failed them (read from any thread:
        ``dict.copy`` copies without letting the other side in between)."""
        out = Counter(dict.copy(self._full))
        out.update(dict.copy(self._failed))
        return out

    # the writer thread --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelapi-prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what waits, then end the writer thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        batch: dict[tuple[str, str, int], Pending] = {}
        next_flush = time.monotonic() + self.flush_s
        next_prune = time.monotonic() + 60.0
        while True:
            self._wake.wait(min(COMPACT_S, max(0.0, next_flush - time.monotonic())))
            self._wake.clear()
            stopping = self._stopping
            self._drain(batch)
            if stopping or time.monotonic() >= next_flush or sum(p.rows for p in batch.values()) >= self._batch_rows:
                self._flush(batch)
                batch = {}
                next_flush = time.monotonic() + self.flush_s
                if stopping:
                    return
                if time.monotonic() >= next_prune:
                    self._prune()
                    next_prune = time.monotonic() + PRUNE_S

    def _drain(self, batch: dict[tuple[str, str, int], Pending]) -> dict[tuple[str, str, int], Pending]:
        """Take what the queue holds now into ``batch``, by (model, version, day), compacted into columns: a
        call's arrays are let go within a tick, and a tick's calls cost a few numpy and Arrow operations per
        column. The deque is only ever appended to (event loop) and popped from (here), so no lock."""
        queue = self._queue
        taken = [queue.popleft() for _ in range(len(queue))]
        i = 0
        while i < len(taken):  # calls of one model and version come in runs (as a rule all of them do)
            first = taken[i]
            model, version, day = first[MODEL], first[VERSION], int(first[TIME] // DAY_S)
            j = i + 1
            while j < len(taken):
                e = taken[j]
                if e[MODEL] != model or e[VERSION] != version or int(e[TIME] // DAY_S) != day:
                    break
                j += 1
            run, i = taken[i:j], j
            counts = [len(next(iter(e[INPUTS].values()))) for e in run]
            try:
                sensitive = self.policies.get(model).sensitive
            except Exception:
                log.exception("prediction log: rows of model %r cannot be recorded", model)
                self._settle(sum(counts), model, dropped=True)
                continue
            if self._left_out is not None and self._sensitive.get(model) != sensitive:
                self._sensitive[model] = sensitive
                try:
                    self._left_out(model)
                except Exception:
                    log.exception("prediction log: the inputs marked sensitive of model %r were not noted", model)
            key = (model, version, day)
            pending = batch.get(key)
            if pending is None:
                pending = batch[key] = Pending(*key)
            pending.extend(run, counts, sensitive)
        for key, pending in list(batch.items()):
            try:
                pending.compact()
            except Exception:
                log.exception("prediction log: %d rows of model %r cannot be recorded", pending.rows, pending.model)
                self._settle(pending.rows, pending.model, dropped=True)
                del batch[key]
        return batch

    def _settle(self, rows: int, model: str, *, dropped: bool) -> None:
        self._settled += rows
        if dropped:
            self._failed[model] += rows
        if dropped and self._families is not None:
            self._families.log_dropped.labels(model).inc(rows)

    def _flush(self, batch: dict[tuple[str, str, int], Pending]) -> None:
        for pending in batch.values():
            ok = True
            try:
                self.store.write(pending.model, pending.version, pending.day, pending.table())
            except Exception:
                ok = False
                log.exception("prediction log: %d rows of model %r were not written", pending.rows, pending.model)
            if ok:
                self.written[pending.model] += pending.rows
                if self._families is not None:
                    self._families.log_rows.labels(pending.model).inc(pending.rows)
            self._settle(pending.rows, pending.model, dropped=not ok)
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        if tallies:
            pid = os.getpid()
            try:
                self.store.write_tallies([Tally(m, v, minute, pid, n, r) for (m, v, minute), (n, r) in tallies.items()])
            except Exception:
                log.exception("prediction log: request tallies were not written")

    def _prune(self) -> None:
        now = time.time()
        for model in [m for m, rate in self._rates.items() if rate > 0]:
            policy = self.policies.get(model)
            try:
                self.store.prune(model, now - policy.retention_s, policy.max_bytes)
            except Exception:
                log.exception("prediction log: retention for model %r failed", model)
