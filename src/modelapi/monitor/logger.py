"""PredictionLogger: the observer that samples answered rows into the prediction log, off the request path.

On the request path (the event loop) it does three cheap things: ``sample_rate`` (a dict lookup), queueing a
``PredictionsServed`` (or dropping it, counted, when ``log_queue_rows`` rows already wait) and tallying every
finished call per (model, version, minute): requests, and those rejected for their input (400, 413, 422).
Flattening, Arrow tables and writing happen on one writer thread per worker, which drains the queue every
``log_flush_s`` (sooner once ``BATCH_ROWS`` rows wait) and applies retention every ``PRUNE_S``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from typing import Any

from ..events import ModelStateChanged, Observer, PredictionsServed, RequestFinished
from ..settings import Settings
from .policy import Policies
from .records import DAY_S, Pending
from .store import LogStore, Tally

log = logging.getLogger("modelapi.monitor")
REJECTED = frozenset({400, 413, 422})
BATCH_ROWS = 10_000
PRUNE_S = 600.0
_STOP = object()


class PredictionLogger(Observer):
    def __init__(self, settings: Settings, policies: Policies, store: LogStore, families: Any = None) -> None:
        self.policies = policies
        self.store = store
        self.capacity = settings.log_queue_rows
        self.flush_s = settings.log_flush_s
        self._families = families  # metrics.catalog.Families, or None with metrics off
        self._rates: dict[str, float] = {}
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0  # rows queued or batched and not yet written
        self._tallies: dict[tuple[str, str, int], list[int]] = {}
        self.dropped: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self._thread: threading.Thread | None = None

    # the request path ---------------------------------------------------------------------------------------
    def sample_rate(self, model: str) -> float:
        rate = self._rates.get(model)
        if rate is None:
            rate = self._rates[model] = self.policies.get(model).rate
        return rate

    def model_state_changed(self, event: ModelStateChanged) -> None:
        if event.state == "READY":
            self._rates[event.model] = self.policies.refresh(event.model).rate

    def predictions_served(self, event: PredictionsServed) -> None:
        rows = len(next(iter(event.inputs.values()))) if event.inputs else 0
        with self._lock:
            if self._waiting + rows > self.capacity:
                self.dropped[event.model] += rows
                full = True
            else:
                self._waiting += rows
                full = False
        if full:
            if self._families is not None:
                self._families.log_dropped.labels(event.model).inc(rows)
            return
        self._queue.put(event)

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
        return self._waiting

    # the writer thread --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelapi-prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what waits, then end the writer thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        batch: dict[tuple[str, str, int], Pending] = {}
        rows = 0
        next_flush = time.monotonic() + self.flush_s
        next_prune = time.monotonic() + 60.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, PredictionsServed):
                rows += self._add(batch, item)
            if item is _STOP or rows >= BATCH_ROWS or time.monotonic() >= next_flush:
                self._flush(batch)
                batch, rows = {}, 0
                next_flush = time.monotonic() + self.flush_s
                if item is _STOP:
                    return
                if time.monotonic() >= next_prune:
                    self._prune()
                    next_prune = time.monotonic() + PRUNE_S

    def _add(self, batch: dict[tuple[str, str, int], Pending], event: PredictionsServed) -> int:
        key = (event.model, event.version, int(event.time // DAY_S))
        pending = batch.get(key)
        if pending is None:
            pending = batch[key] = Pending(*key)
        try:
            return pending.add(event, self.policies.get(event.model).sensitive)
        except Exception:
            log.exception("prediction log: rows of model %r cannot be recorded", event.model)
            self._release(len(next(iter(event.inputs.values()))) if event.inputs else 0, event.model, dropped=True)
            return 0

    def _release(self, rows: int, model: str, *, dropped: bool) -> None:
        with self._lock:
            self._waiting -= rows
            if dropped:
                self.dropped[model] += rows
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
            self._release(pending.rows, pending.model, dropped=not ok)
            if ok:
                self.written[pending.model] += pending.rows
                if self._families is not None:
                    self._families.log_rows.labels(pending.model).inc(pending.rows)
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
