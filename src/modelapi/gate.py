"""ModelGate: how many calls one model may hold at once, and how long a new one may expect to wait (503 above).

The data plane owns one gate and admits every call through it, whatever front end made the call, so HTTP, the
job runner and gRPC share the same limits. The count is per model name, across its versions, so a swap in
progress does not double what a model may hold. Per worker process.

Two bounds, both decided on the request's head, before its body is read (``docs/overload.md``):

- **count**: ``max_inflight`` calls admitted and not yet finished (reading their body, queued or running);
- **time**: the wait the version's batcher expects for a call joining its queue now
  (``Batcher.expected_wait``: batches ahead x recent batch time) must not exceed ``max_queue_s``.
"""

from __future__ import annotations

import math

from .errors import Overloaded

#: ``Retry-After`` (seconds) when a model is over its in-flight limit: queues drain in well under a second
OVERLOADED_RETRY_AFTER_S = 1


class ModelGate:
    def __init__(self, max_inflight: int, max_queue_s: float | None = None) -> None:
        self.max_inflight = max_inflight
        self.max_queue_s = max_queue_s
        self.inflight: dict[str, int] = {}

    def enter(
        self, model: str, limit: int | None = None, max_queue_s: float | None = None, expected_wait_s: float = 0.0
    ) -> None:
        """Count one more call into ``model``, or raise ``Overloaded`` at its in-flight limit or when
        ``expected_wait_s`` is over the queue-time budget (``limit``, ``max_queue_s`` override the gate's own,
        e.g. from the model's model.toml)."""
        count = self.inflight.get(model, 0)
        cap = self.max_inflight if limit is None else limit
        if count >= cap:
            raise Overloaded(
                f"model '{model}' already has {count} requests in flight, the limit (max_inflight); retry shortly",
                headers={"retry-after": str(OVERLOADED_RETRY_AFTER_S)},
            )
        budget = self.max_queue_s if max_queue_s is None else max_queue_s
        if budget is not None and expected_wait_s > budget:
            raise Overloaded(
                f"model '{model}' would reach this request in about {expected_wait_s * 1000:.0f} ms, more than the "
                f"queue-time limit of {budget * 1000:g} ms (max_queue_ms); retry shortly",
                headers={"retry-after": str(max(OVERLOADED_RETRY_AFTER_S, math.ceil(expected_wait_s)))},
            )
        self.inflight[model] = count + 1

    def leave(self, model: str) -> None:
        left = self.inflight[model] - 1
        if left:
            self.inflight[model] = left
        else:
            del self.inflight[model]  # a name nobody serves leaves nothing behind
