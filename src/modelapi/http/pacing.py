"""Request heads taken a slice at a time under a flood, so that what is already admitted, and a probe, keep moving.

The event loop reads every connection that has data in one turn, and uvicorn's protocol parses each request's
head and starts its task as it reads it. When a flood's worth of clients send at once (thousands of connections
opened together, or clients that come back together after the same ``Retry-After``), one turn takes up every
head: each is parsed, decided (admitted, or refused on its head: ``http/shedding.py``) and its task started, and
the turn after runs all of those tasks. A request already admitted, waiting for its batch's answer to be written,
and ``/v2/health/live``, whose orchestrator kills the server when it is late, wait behind the whole flood.

``Pacing`` bounds that: the protocol (``security/slow_clients.py``) asks it before it takes the first bytes of a
request other than ``GET``/``HEAD`` (those, cheap to answer and the probes among them, are taken at once, as are
a request's later bytes). While heads keep coming back to back for more than a slice (``slice_s``) the rest
wait their turn: the connection keeps its bytes unparsed, and one callback per turn of the loop takes a slice of
them, the oldest first while the oldest has waited less than ``newest_first_s``, the newest first past it. Each
turn then holds at most a slice of new heads and what the slice before started, so a probe's answer waits a few
slices, not the flood. Nothing is dropped or refused here: a waiting head is decided when it is taken, and its
queue time counts from when it was read (``security/slow_clients.ARRIVED``), so the gate refuses one that has
waited past ``--max-queue-ms``.

Why the order turns (adaptive LIFO, as in Facebook's "Fail at Scale", ACM Queue 13(8), 2015): taken oldest first
behind a backlog longer than the queue budget, every head has waited past it by its turn, those of clients coming
back the moment their answer arrived too, so a flood's first burst ended with every client refused and asleep on
its ``Retry-After`` while the model idled (docs/overload-log.md). Taken newest first then, a head that just came is
decided within the budget, and the older ones, refused either way, are taken as the slices allow. While the
backlog is shorter, oldest first spreads the wait evenly, so no head waits past the budget (newest first there
left the oldest to go stale and be refused, and clients that retry at once lost a tenth of their answers). The
order turns at half the queue budget (``newest_first_s``, ``for_budget``): a head taken later has little of
the budget left for the loop's turn and its batch. A head that has waited ``oldest_first_s`` (twice the budget,
at least a second) is taken before newer ones, so that none waits for ever while new heads keep coming (its
client would time out instead of being answered). The budget starts as the server's (``for_budget``); once the
app is built it is the tightest of the models with calls in flight (``follow``: a version's own ``max_queue_ms``
in model.toml, else the server's), read at each turn that takes heads: with one model's budget far below the
server's, its heads went stale before the order turned for the server's.

Heads one at a time, as at low load, are taken at once: a head is part of a run only when it comes within
``gap_s`` of the one before while other requests are in progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("modelapi")


class Paced(Protocol):
    """A connection whose bytes may wait their turn (``GuardedHttpToolsProtocol``)."""

    def take_waiting(self) -> None:
        """Takes the bytes kept while the connection waited its turn (nothing if it closed meanwhile)."""

    @property
    def gone(self) -> bool:
        """Whether it closed while it waited (nothing left to take)."""


class Pacing:
    """One per server process, shared by its connections; ``slice_s``: the longest run of heads taken in one turn
    of the loop; ``gap_s``: a head this long after the one before starts a new run; ``newest_first_s``: once the
    oldest waiting head has waited this long, the newest are taken first (``None``: always the oldest);
    ``oldest_first_s``: a head that has waited this long is taken before newer ones (above ``newest_first_s``)."""

    def __init__(
        self,
        slice_s: float = 0.002,
        gap_s: float = 0.001,
        newest_first_s: float | None = None,
        oldest_first_s: float = 1.0,
    ) -> None:
        if newest_first_s is not None and newest_first_s >= oldest_first_s:
            raise ValueError(f"newest_first_s ({newest_first_s}) must be below oldest_first_s ({oldest_first_s})")
        self.slice_s = slice_s
        self.gap_s = gap_s
        self.newest_first_s = newest_first_s
        self.oldest_first_s = oldest_first_s
        #: the connections whose heads wait, each with when it joined, oldest on the left
        self.waiting: deque[tuple[Paced, float]] = deque()
        self._run_started = 0.0
        self._last = 0.0
        self._draining = False
        self._budget: Callable[[], float | None] | None = None
        self._budget_failed = False  # (logged once)

    @classmethod
    def for_budget(cls, slice_s: float, budget_s: float | None) -> Pacing:
        """Pacing as the server sets it for its queue budget (``--max-queue-ms``, ``None`` for none): the newest
        first once the oldest head has waited half the budget; the oldest first again past twice the budget, and
        never before a second (a head that old was refused either way: it is answered before its client gives up)."""
        newest, oldest = _order(budget_s)
        return cls(slice_s, newest_first_s=newest, oldest_first_s=oldest)

    def follow(self, budget: Callable[[], float | None]) -> None:
        """From now on, the order's times are ``for_budget``'s for ``budget()`` (seconds; ``None``: none), read at
        each turn that takes heads: the server binds it to the tightest queue budget of the versions ready
        (``DataPlane.tightest_queue_s``), which traffic and a model's reload change. A budget that raises leaves
        the order as it was (logged once): the heads are still taken."""
        self._budget = budget

    def later(self, connection: Paced, busy: bool = True) -> bool:
        """Whether the head now arriving on ``connection`` waits its turn (it joins the queue: the connection is
        told to take its bytes when its turn comes) rather than being taken now. ``busy``: other requests are in
        progress; a head that comes when none is starts a new run (a client alone, whose next request follows
        the last answer within ``gap_s``, is never paced)."""
        waiting = self.waiting
        now = time.monotonic()
        if waiting:  # others came first
            waiting.append((connection, now))
            return True
        if not busy or now - self._last > self.gap_s:
            self._run_started = now
        self._last = now
        if not busy or now - self._run_started < self.slice_s:
            return False
        waiting.append((connection, now))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)
        return True

    def _drain(self) -> None:
        """One turn's slice of the waiting heads (at least one), in the order the class's docstring says, then the
        rest on later turns."""
        started = time.monotonic()
        waiting = self.waiting
        if self._budget is not None:
            try:
                self.newest_first_s, self.oldest_first_s = _order(self._budget())
            except Exception:  # the order stays as it was: heads must go on being taken whatever the budget does
                if not self._budget_failed:
                    self._budget_failed = True
                    log.exception("pacing: the queue budget could not be read; the order stays as it was")
        overdue = started - self.oldest_first_s
        # the oldest joined before this: the backlog is long, the newest go first
        backlog = None if self.newest_first_s is None else started - self.newest_first_s
        try:
            while waiting:
                while waiting[0][0].gone:  # closed while it waited: its age says nothing of the backlog
                    waiting.popleft()
                    if not waiting:
                        return
                first = waiting[0][1]
                newest = backlog is not None and overdue < first <= backlog
                connection, _ = waiting.pop() if newest else waiting.popleft()
                connection.take_waiting()
                if time.monotonic() - started >= self.slice_s:
                    break
        finally:
            # the heads that arrive in this turn's reads continue the run: they wait behind what is left
            self._run_started = started
            self._last = time.monotonic()
            if waiting:
                asyncio.get_running_loop().call_soon(self._drain)
            else:
                self._draining = False


def _order(budget_s: float | None) -> tuple[float | None, float]:
    """``newest_first_s`` and ``oldest_first_s`` for a queue budget (``Pacing.for_budget``)."""
    if budget_s is None:
        return None, 1.0
    return budget_s / 2, max(1.0, 2 * budget_s)
