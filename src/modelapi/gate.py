"""ModelGate: how many calls one model may hold at once, and how long a new one would wait (503 above either).

The data plane owns one gate and admits every call through it, whatever front end made the call, so HTTP, the
job runner and gRPC share the same limits. The count is per model name, across its versions, so a swap in
progress does not double what a model may hold. Per worker process.

Two bounds, both decided before a request's body is read (``docs/overload.md``):

- **count**: ``max_inflight`` calls admitted and not yet finished (reading their body, queued or running);
- **time**: the wait a new call can expect, ``calls begun * seconds per call``, must not exceed ``max_queue_s``.
  A call *begins* once its body is in (``begin``): a client still uploading is no work ahead of anyone. The
  seconds per call are the model's recent *busy* time divided by the calls it finished in it: time with at
  least one call begun, so idle time between requests (or a slow upload) never inflates them. Under saturation that is
  1 / throughput, and ``in flight / throughput`` is the wait by Little's law; at light load it is about one
  call's latency, and the few calls in flight never look like a queue. It covers everything a call waits on in
  this process (the event loop decoding others' bodies, the batcher, the model's thread), not only the batcher.
"""

from __future__ import annotations

import math
import time

from .errors import Overloaded

#: ``Retry-After`` (seconds) when a model is over its in-flight limit: queues drain in well under a second
OVERLOADED_RETRY_AFTER_S = 1
#: the service-time estimate is refreshed once this much busy time or this many finished calls have passed
_WINDOW_S = 0.1
_WINDOW_CALLS = 256
#: weight of the newest window in the moving average (about the last second of busy time counts)
_ALPHA = 0.2


class _Load:
    """One model's service rate: busy time and finished calls since the last window, and the moving average."""

    __slots__ = ("active", "busy_s", "busy_since", "done", "per_call_s")

    def __init__(self) -> None:
        self.active = 0  # calls begun (body in) and not finished
        self.busy_since = 0.0  # when the in-flight count last went from 0 to 1
        self.busy_s = 0.0  # busy time in the current window, up to busy_since
        self.done = 0  # calls finished in the current window
        self.per_call_s = 0.0  # moving average of busy seconds per finished call (0: not measured yet)


class ModelGate:
    def __init__(self, max_inflight: int, max_queue_s: float | None = None) -> None:
        self.max_inflight = max_inflight
        self.max_queue_s = max_queue_s
        self.inflight: dict[str, int] = {}
        self._load: dict[str, _Load] = {}

    def expected_wait(self, model: str) -> float:
        """Seconds a call admitted into ``model`` now can expect to wait behind the calls already in flight."""
        load = self._load.get(model)
        return 0.0 if load is None else load.active * load.per_call_s

    def enter(self, model: str, limit: int | None = None, max_queue_s: float | None = None) -> None:
        """Count one more call into ``model``, or raise ``Overloaded`` at its in-flight limit or when its expected
        wait is over the queue-time budget (``limit``, ``max_queue_s`` override the gate's own, e.g. from the
        model's model.toml)."""
        count = self.inflight.get(model, 0)
        cap = self.max_inflight if limit is None else limit
        if count >= cap:
            raise Overloaded(
                f"model '{model}' already has {count} requests in flight, the limit (max_inflight); retry shortly",
                headers={"retry-after": str(OVERLOADED_RETRY_AFTER_S)},
            )
        load = self._load.get(model)
        if load is None:
            load = self._load[model] = _Load()
        budget = self.max_queue_s if max_queue_s is None else max_queue_s
        ahead = load.active
        if ahead and budget is not None:
            wait = ahead * load.per_call_s
            if wait > budget:
                raise Overloaded(
                    f"model '{model}' would answer in about {wait * 1000:.0f} ms ({ahead} requests ahead), more than "
                    f"the queue-time limit of {budget * 1000:g} ms (max_queue_ms); retry shortly",
                    headers={"retry-after": str(max(OVERLOADED_RETRY_AFTER_S, math.ceil(wait)))},
                )
        self.inflight[model] = count + 1

    def begin(self, model: str) -> None:
        """The call entered with ``enter`` has its body: it is work ahead of later calls from now on."""
        load = self._load[model]
        if not load.active:
            load.busy_since = time.monotonic()
        load.active += 1

    def leave(self, model: str, begun: bool = True) -> None:
        """The call is over (``begun``: it had called ``begin``)."""
        left = self.inflight[model] - 1
        if left:
            self.inflight[model] = left
        else:
            del self.inflight[model]  # a name nobody serves leaves nothing behind
        if not begun:
            return
        load = self._load[model]
        load.active -= 1
        load.done += 1
        if load.active and load.done < _WINDOW_CALLS:
            return
        now = time.monotonic()
        busy = load.busy_s + (now - load.busy_since)
        if busy >= _WINDOW_S or load.done >= _WINDOW_CALLS:
            sample = busy / load.done
            old = load.per_call_s
            load.per_call_s = sample if old == 0.0 else old + _ALPHA * (sample - old)
            load.busy_s, load.done = 0.0, 0
        else:
            load.busy_s = busy
        load.busy_since = now
