"""Keep the cyclic garbage collector off the request path: freeze what is alive once models are loaded.

A worker holds a few hundred thousand long-lived objects (scikit-learn, numpy, pandas, pyarrow and the models
themselves). Every full collection walks all of them, and one comes every few seconds under load: it stops the
event loop for tens of milliseconds (measured in docs/overload.md), which shows as the worst latency of
health probes and the p99 of requests. ``gc.freeze()`` moves every object alive at that moment into a permanent
generation that collections skip, so the collections that requests' garbage triggers walk only that garbage.

The freeze is redone after a version is loaded (its objects join the frozen set) and after one is unloaded
(unfrozen first and collected, so that whatever cycles the old model leaves are reclaimed, not kept for good),
once per burst of such changes: a short while after the last one, so that a repository of many models loading
at start pays for one collection, not one per model. That collection is the one pause left, at load time.

The first freeze also raises the youngest generation's threshold from 700 to ``YOUNG_THRESHOLD`` allocations. A
request leaves no reference cycle, served, refused on its head or dropped for queue time (``tests/test_dataplane.py``
checks them), so young collections find nothing to free; they only walk what requests in flight hold. Python
counts allocations less deallocations, never below zero, so the count creeps up as the number of requests in
flight rises and falls, and a collection comes however steady the load: at 700 they ran several times per batch of
64 requests and cost 13-34 µs a request; at 10,000, with 1,920 connections (hundreds of requests in flight, some
50,000 young objects), one every half second, 13-30 ms each, finding nothing (docs/overload-log.md). Garbage in
cycles, if any, waits at most that many allocations longer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from .events import ModelStateChanged, Observer

log = logging.getLogger("modelapi.heap")

#: allocations (less deallocations) of tracked objects between young collections; Python's default is 700
YOUNG_THRESHOLD = 100_000
#: states after which the set of long-lived objects changed
_CHANGED = frozenset({"READY", "UNLOADED", "UNAVAILABLE"})


def freeze() -> float:
    """Collect, then freeze everything alive, and collect the young generation less often; returns the seconds
    it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return time.perf_counter() - started


class HeapFreezer(Observer):
    """Subscribe one per server worker (``create_app(..., freeze_heap=True)``, as ``server.py`` does): freezes
    the heap ``delay_s`` after the last version was loaded or unloaded. Not for an app embedded in another
    program (a test session, say), whose heap is that program's and may be far larger: each freeze collects it
    whole first."""

    def __init__(self, delay_s: float = 0.5) -> None:
        self.delay_s = delay_s
        self._pending: asyncio.TimerHandle | None = None
        self.freezes = 0

    def model_state_changed(self, event: ModelStateChanged) -> None:
        if event.state not in _CHANGED:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop (a worker's job runner, a test): now
            self._freeze()
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = loop.call_later(self.delay_s, self._freeze)

    def _freeze(self) -> None:
        self._pending = None
        seconds = freeze()
        self.freezes += 1
        log.debug("heap frozen: %d objects in %.0f ms", gc.get_freeze_count(), seconds * 1000)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
