"""Early retries held until their ``Retry-After``, or until the server has room, then answered ``503`` with
``Retry-After: 0`` and never run: a client that ignores the wait it was given costs two refusals per wait, not one
per round trip, no request the server runs has waited out a hold first, and the server never idles while it holds
one.

A ``503`` carries ``Retry-After`` (an overloaded model, a server starting or stopping). A client that honours it
costs the server nothing until then; one that retries at once (a retry loop without back-off, a load generator)
costs a refusal each time, and a few hundred such connections keep the event loop busy refusing: every request then
waits its turn behind the refusals longer than the queue-time bound, so every request is refused and nothing is
served (docs/overload.md). ``RetryHolds`` remembers, per connection and path, until when the last refusal asked it
to wait. A connection is the one modelapi's HTTP protocol names (``security/slow_clients.CONNECTION``: a new
connection from the same address and port, the kernel's ephemeral ports reused, is another), or the client's address
and port where a server gives no such name. A request on the same connection to the same path before then is held (a
future awaited, no work) until that time and then answered ``503`` with ``Retry-After: 0`` (``EarlyRetry``, reason
``early_retry``), never run: had it run, its client would have its answer the hold plus the request's own time after
sending it, far past the queue-time budget (``--max-queue-ms``) that bounds how long a request the server takes
waits, and the wait told would have bought the client nothing but latency. Its next request is judged as any:
admitted if there is room, refused (and that one's early retry held) otherwise. A request to another path, or from
another connection, is not held, nor a browser's CORS preflight (``OPTIONS``). A ``429`` is not remembered: it is
one API key's limit, and the next request on the connection may carry another key.

Who holds it: the middleware (``wait``: the request's task awaits), or, for an early retry that came whole in one
read while the gate refuses and no access line is to be written, the HTTP protocol itself (``hold_on_head``, from
``http/shedding.HeldRead``): no task, so it is none of the requests in progress, and the counts below leave it
out (``on_head``).

**Work-conserving.** The schedule of returns (``gate.Returns``) tells a flood's refusals to come back up to 30 s
ahead, so a retry held until then could wait that long on a server gone idle (the flood over, the slow requests
done). So a held retry is also released (answered, for its client to send it again at once), oldest first, as soon
as the server is about to run out of work: fewer than ``ROOM`` requests in progress that are not held (uvicorn's set
of request tasks, ``IN_PROGRESS``, less the held ones), and the data plane would admit a call (``room``). That is
checked when a request ends (the last one to end releases whatever is held), when a retry is about to be held (with
room, it is not held at all), and once more in the loop's next turn after a retry was held or a request ended with
retries held: retries that arrive together, each seeing the others not held yet, may all be held in one turn, and
requests that end together each see the others still in progress; either way no request would be left to end and
release them. It is fair to clients that honour ``Retry-After``: a held retry's client is sent back only while
nothing else keeps the server busy, so its next request takes only work the server would otherwise not do, and a
returning client finds the same room it would have found without the holds. Refusals on the head
(``http/shedding.py``) book holds but hold nothing; written on the head they end no task (a pipelined one, run by
uvicorn's request cycle, ends its task as any), and they come only while every model refuses, when there is no room
to release into. A released retry is answered in a turn and ends: until its client's next request comes (``came``,
or a refusal of it on its head; at most ``RETURN_S``) it counts as in progress (``returning``), else each such end
would release the next ones and a lull would send every held retry back at once.

When the server stops (``stop``, from the HTTP protocol's shutdown), every held retry is answered at once and none
is held from then on: uvicorn waits for the requests in progress, and would wait out their holds.

Behind a proxy that pools its connections to the server, another client's request to the same path on the
same pooled connection is held too, at most the ``Retry-After`` the model just gave, and then refused;
``--no-hold-early-retries`` turns holding off.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Hashable, Iterable, Sized
from typing import Any

from ..security.slow_clients import CONNECTION

#: most connections remembered at once: beyond it, refusals are not remembered (and nothing is held for them)
MAX_HELD = 100_000
#: fewer requests in progress and not held than this: the server is about to idle, and held retries are released
#: to fill the gap. Not 1 (release only once all is quiet): a request's time is mostly its own round trip (the
#: batch on the model's thread, the write, the client's next request), during which one request alone leaves the
#: event loop idle; a few overlapping ones keep it busy. Small, so that what the held take is only what the
#: server would otherwise leave unused, and a client that honours Retry-After still finds the room it expects.
ROOM = 4
#: a released retry's client is expected back this soon (its next request, sent at once on the "retry now"): until
#: then it counts as in progress, so that releases answered in a turn do not each release the next ones
RETURN_S = 0.1
#: a retry this little before its time is not held: a client's timer a few milliseconds early (its wait reckoned
#: from its send, a coarse clock) is no reason to refuse it
EARLY_S = 0.05


def connection(scope: Any) -> Hashable | None:
    """The connection ``scope``'s request came on, as ``RetryHolds`` keys it (``None``: unknown)."""
    named = scope.get(CONNECTION)
    if named is not None:
        return named  # type: ignore[no-any-return]
    client = scope.get("client")
    return None if client is None else tuple(client)


class RetryHolds:
    """Per worker: ``(connection, path) -> monotonic time`` before which a request there is held, and the requests
    held now, oldest first. ``room``: whether the data plane would admit a call now (none: always), asked before
    releasing held retries early, so that a release does not just buy another refusal."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_held: int = MAX_HELD,
        room: Callable[[], bool] | None = None,
    ) -> None:
        self.clock = clock
        self.max_held = max_held
        self.until: dict[tuple[Hashable, str], float] = {}
        #: each held request's waiter, in the order they were held, and its connection; True: released early
        self.held: dict[asyncio.Future[bool], Hashable] = {}
        #: the waiters of retries the HTTP protocol holds itself (``hold_on_head``): no task, none of the requests
        #: in progress, so not taken off their count as the app's held ones are
        self.on_head: set[asyncio.Future[bool]] = set()
        #: connections whose held retry was released early and whose next request has not come yet: until when
        #: each counts as in progress (``RETURN_S``)
        self.returning: dict[Hashable, float] = {}
        #: the server is stopping: nothing is held any more
        self.stopping = False
        self.room = room
        self._sweep_at = 0.0
        #: a check for room is due in the loop's next turn (``_settle``): a request that ends meanwhile is to call
        #: ``ended`` even with nothing held, so that the check knows it may still be in progress
        self.settling = False
        self._ended = 0  # requests that ended since that check was asked for

    def refused(self, client: Hashable | None, path: str, retry_after: bytes) -> None:
        """A refusal with ``Retry-After: retry_after`` (delta-seconds) went to the connection ``client``
        (``connection``'s) for ``path``."""
        if client is None:
            return
        try:
            seconds = float(retry_after)
        except ValueError:  # an HTTP date: not ours (ours are seconds)
            return
        until = self.until
        if seconds <= 0.0:  # "retry now" (a held retry's answer): nothing to hold
            until.pop((client, path), None)
            return
        if self.returning:  # a client sent back from a hold came back, and was refused (on its head, say)
            self.returning.pop(client, None)
        now = self.clock()
        if len(until) >= self.max_held:
            if now < self._sweep_at:
                return
            self._sweep_at = now + 1.0  # one sweep a second at most
            for key in [k for k, t in until.items() if t <= now]:
                del until[key]
            if len(until) >= self.max_held:
                return
        until[(client, path)] = now + seconds

    def due(self, client: Hashable | None, path: str) -> bool:
        """Whether a request from the connection ``client`` for ``path`` now would be held. Changes nothing."""
        if client is None or not self.until:
            return False
        until = self.until.get((client, path))
        return until is not None and until > self.clock()

    def hold(self, client: Hashable | None, path: str) -> float:
        """Seconds a request from the connection ``client`` for ``path`` is to wait now (0.0: none); forgets the
        refusal."""
        remembered = self.until
        if client is None or not remembered:
            return 0.0
        until = remembered.pop((client, path), None)
        now = self.clock()
        if remembered:
            # the oldest refusal remembered, once its time has passed, is forgotten: most are to connections that
            # closed and will not come back (a new connection is another), so the table empties as requests come
            oldest = next(iter(remembered))
            if remembered[oldest] <= now:
                del remembered[oldest]
        if until is None or until - now < EARLY_S or self.stopping:
            return 0.0
        return until - now

    def came(self, client: Hashable | None) -> None:
        """A request from the connection ``client`` began: if its held retry was released early, it is back."""
        self.returning.pop(client, None)

    async def wait(self, seconds: float, in_progress: Sized | None, client: Hashable = None) -> float:
        """Hold the calling request (one of ``in_progress``, the server's requests in progress, if known) for
        ``seconds`` at most, or until the server has room for it; the seconds it was held (0.0: the server had room
        at once, and it was not held at all). ``client``: its connection, expected back once it is released early.
        The waiter is forgotten however the wait ends (released, timed out, or the request cancelled)."""
        if self._release(in_progress, 1) > 0:  # room left after the older held ones: not held at all
            return 0.0
        loop = asyncio.get_running_loop()
        began = self.clock()
        waiter: asyncio.Future[bool] = loop.create_future()
        # an empty context: a timer cancelled by an early release stays in the loop's heap until its time, and one
        # holding this request's context would keep its scope alive that long
        timer = loop.call_later(seconds, self._expire, waiter, context=contextvars.Context())
        self.held[waiter] = client
        self._settle_soon(in_progress)
        try:
            await waiter
            # at least a nanosecond: a clock that did not move (a test's) still says it was held
            return max(self.clock() - began, 1e-9)
        finally:
            self.held.pop(waiter, None)
            timer.cancel()

    def hold_on_head(self, seconds: float, in_progress: Sized | None, client: Hashable) -> asyncio.Future[bool] | None:
        """``wait`` for a retry the HTTP protocol holds itself, with no task (``http/shedding.py``): ``None`` if the
        server has room (not held: the request goes on as any); else the waiter, done as ``wait``'s would end
        (``True``: released early; ``False``: its time came). Cancelled (its connection lost), it is forgotten."""
        if self._release(in_progress, 0) > 0:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(seconds, self._expire, waiter, context=contextvars.Context())
        self.held[waiter] = client
        self.on_head.add(waiter)
        waiter.add_done_callback(functools.partial(self._off_head, timer), context=contextvars.Context())
        self._settle_soon(in_progress)
        return waiter

    def _off_head(self, timer: asyncio.TimerHandle, waiter: asyncio.Future[bool]) -> None:
        self.held.pop(waiter, None)
        self.on_head.discard(waiter)
        timer.cancel()

    def ended(self, in_progress: Sized | None) -> None:
        """A request of ``in_progress`` (still in it) is ending: if the server is about to run out of work, held
        retries are released, oldest first, to take it up. Called at every request's end while any retry is held
        or ``settling``."""
        self._ended += 1
        if self.held:
            self._release(in_progress, 1)
            if self.held:
                self._settle_soon(in_progress)

    def stop(self) -> None:
        """The server is stopping: every held retry is answered now, and none is held from now on."""
        self.stopping = True
        held, self.held = self.held, {}
        self.on_head = set()
        for waiter in held:
            if not waiter.done():
                waiter.set_result(True)

    def _release(self, in_progress: Sized | None, own: int) -> int:
        """Release held requests, oldest first, while fewer than ``ROOM`` requests are in progress and not held
        (``own``: the caller's, in ``in_progress`` but about to be neither; unknown: none is released), counting
        the released ones whose clients are still to come back (``returning``), and the data plane has room; the
        places under ``ROOM`` left after them."""
        if in_progress is None:
            return 0
        held = self.held
        returning = self.returning
        if returning:
            now = self.clock()
            for key in [k for k, t in returning.items() if t <= now]:  # not back in time: not coming
                del returning[key]
        free = ROOM - (len(in_progress) - (len(held) - len(self.on_head)) - own) - len(returning)
        if free <= 0 or (self.room is not None and not self.room()):
            return 0
        released = False
        while held and free > 0:
            waiter = next(iter(held))
            client = held.pop(waiter)
            self.on_head.discard(waiter)
            if not waiter.done():  # (one cancelled with its request is not a place taken)
                waiter.set_result(True)
                free -= 1
                released = True
                if client is not None:
                    returning[client] = self.clock() + RETURN_S
        if released and held:
            # a client that does not come back frees its place at RETURN_S: look for room again then
            loop = asyncio.get_running_loop()
            loop.call_later(RETURN_S, self._settle_soon, in_progress, context=contextvars.Context())
        return free

    def _settle_soon(self, in_progress: Sized | None) -> None:
        """Check for room again in the loop's next turn (``_settle``), once however often asked in this one."""
        if in_progress is not None and not self.settling:
            self.settling = True
            asyncio.get_running_loop().call_soon(self._settle, in_progress, context=contextvars.Context())

    def _settle(self, in_progress: Sized) -> None:
        """A turn after retries were held or requests ended: release held ones if the server has run out of work.
        Requests that ended in the turn before may still be in ``in_progress`` (a task leaves uvicorn's set in a
        callback after it is done, each seeing the others there as it ended), so when they could make the
        difference, done tasks are not counted."""
        self.settling = False
        ended, self._ended = self._ended, 0
        if not self.held:
            return
        busy = len(in_progress) - (len(self.held) - len(self.on_head))
        done = 0
        if ROOM <= busy < ROOM + ended and isinstance(in_progress, Iterable):
            done = sum(1 for task in in_progress if isinstance(task, asyncio.Future) and task.done())
        self._release(in_progress, done)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        # no longer held from now, not from when its request next runs: the count of held stays true meanwhile
        self.held.pop(waiter, None)
        self.on_head.discard(waiter)
        if not waiter.done():
            waiter.set_result(False)
