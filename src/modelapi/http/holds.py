"""Early retries held until their ``Retry-After``: a client that ignores the wait it was given costs one refusal
per wait, not one per round trip.

A ``503`` carries ``Retry-After`` (an overloaded model, a server starting or stopping). A client that honours it
costs the server nothing until then; one that retries at once (a retry loop without back-off, a load generator)
costs a refusal each time, and a few hundred such connections keep the event loop busy refusing: every request then
waits its turn behind the refusals longer than the queue-time bound, so every request is refused and nothing is
served (docs/overload.md). ``RetryHolds`` remembers, per connection (the client's address and port) and path, until when
the last refusal asked it to wait. A request on the same connection to the same path before then is held (an
``asyncio.sleep``, no work) until that time and then goes on as any request does: admitted if there is room,
refused again otherwise. A request to another path, or from another connection, is not held. A ``429`` is not
remembered: it is one API key's limit, and the next request on the connection may carry another key.

Behind a proxy that pools its connections to the server, another client's request to the same path on the
same pooled connection is held too, at most the ``Retry-After`` the model just gave; ``--no-hold-early-retries``
turns holding off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: most connections remembered at once: beyond it, refusals are not remembered (and nothing is held for them)
MAX_HELD = 100_000


class RetryHolds:
    """Per worker: ``(client, path) -> monotonic time`` before which a request there is held."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_held: int = MAX_HELD) -> None:
        self.clock = clock
        self.max_held = max_held
        self.until: dict[tuple[str, int, str], float] = {}
        self._sweep_at = 0.0

    def refused(self, client: tuple[str, int] | None, path: str, retry_after: bytes) -> None:
        """A refusal with ``Retry-After: retry_after`` (delta-seconds) went to ``client`` for ``path``."""
        if client is None:
            return
        try:
            seconds = float(retry_after)
        except ValueError:  # an HTTP date: not ours (ours are seconds)
            return
        now = self.clock()
        until = self.until
        if len(until) >= self.max_held:
            if now < self._sweep_at:
                return
            self._sweep_at = now + 1.0  # one sweep a second at most
            for key in [k for k, t in until.items() if t <= now]:
                del until[key]
            if len(until) >= self.max_held:
                return
        until[(client[0], client[1], path)] = now + seconds

    def hold(self, client: tuple[str, int] | None, path: str) -> float:
        """Seconds a request from ``client`` for ``path`` is to wait now (0.0: none); forgets the refusal."""
        if client is None or not self.until:
            return 0.0
        until = self.until.pop((client[0], client[1], path), None)
        if until is None:
            return 0.0
        return max(until - self.clock(), 0.0)
