"""ModelGate: how many calls one model may hold at once, running or queued (503 with Retry-After above).

The data plane owns one gate and admits every call through it, whatever front end made the call, so HTTP, the
job runner and gRPC share the same limits. The count is per model name, across its versions, so a swap in
progress does not double what a model may hold. Per worker process.
"""

from __future__ import annotations

from .errors import Overloaded

#: ``Retry-After`` (seconds) when a model is over its in-flight limit: queues drain in well under a second
OVERLOADED_RETRY_AFTER_S = 1


class ModelGate:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.inflight: dict[str, int] = {}

    def enter(self, model: str, limit: int | None = None) -> None:
        """Count one more call into ``model``, or raise ``Overloaded`` at its limit (``limit`` overrides the
        gate's own, e.g. from the model's model.toml)."""
        count = self.inflight.get(model, 0)
        cap = self.max_inflight if limit is None else limit
        if count >= cap:
            raise Overloaded(
                f"model '{model}' already has {count} requests in flight, the limit (max_inflight); retry shortly",
                headers={"retry-after": str(OVERLOADED_RETRY_AFTER_S)},
            )
        self.inflight[model] = count + 1

    def leave(self, model: str) -> None:
        left = self.inflight[model] - 1
        if left:
            self.inflight[model] = left
        else:
            del self.inflight[model]  # a name nobody serves leaves nothing behind
