"""What metrics cost a request: the observer seam's events for one answered, batched 1-row request.

``python -m bench.metrics_events`` emits RequestStarted, BatchRun and RequestFinished through ``Events`` with
a ``MetricsObserver`` subscribed (and with nobody subscribed, for the baseline), in single-process and in
multiprocess mode, and prints microseconds per request. The observer's periodic flush is included (once per
``FLUSH_EVERY`` requests, far more often than the server's once a second).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from modelapi import metrics
from modelapi.events import BatchRun, Events, RequestFinished, RequestStarted

N = 200_000
FLUSH_EVERY = 5_000


def per_request_us(subscribe: bool) -> float:
    events = Events()
    observer = metrics.MetricsObserver() if subscribe else None
    if observer is not None:
        events.subscribe(observer)
    flush = getattr(observer, "flush", None)
    start = time.perf_counter()
    for i in range(N):
        # what the data plane and the batcher do (they build the events only when someone listens)
        if events.active:
            events.request_started(RequestStarted("iris", "1", "v2", None))
            events.batch_run(BatchRun("iris", "1", 1, 1, 0.0002))
            events.request_finished(RequestFinished("iris", "1", "v2", 200, 1, 0.0001, 0.0002, 0.0004, None))
        if flush is not None and i % FLUSH_EVERY == 0:
            flush()
    if flush is not None:
        flush()
    return (time.perf_counter() - start) / N * 1e6


def main() -> None:
    metrics.setup(None)
    off = per_request_us(False)
    single = per_request_us(True)
    with tempfile.TemporaryDirectory() as tmp:
        metrics.setup(Path(tmp))
        multi = per_request_us(True)
        metrics.shutdown()
    metrics.setup(None)
    print(f"python {sys.version.split()[0]}, {N} requests")
    print(f"no subscriber:              {off:6.2f} us/request")
    print(f"metrics, single process:    {single:6.2f} us/request (+{single - off:.2f})")
    print(f"metrics, multiprocess mode: {multi:6.2f} us/request (+{multi - off:.2f})")


if __name__ == "__main__":
    main()
