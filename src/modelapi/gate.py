"""ModelGate: how many calls one model may hold at once, and how long a new one may expect to wait (503 above).

The data plane owns one gate and admits every call through it, whatever front end made the call, so HTTP, the
job runner and gRPC share the same limits. The count is per model name, across its versions, so a swap in
progress does not double what a model may hold. Per worker process.

Two bounds, both decided on the request's head, before its body is read (``docs/overload.md``):

- **count**: ``max_inflight`` calls admitted and not yet finished (reading their body, queued or running);
- **time**: how long the version's batcher expects a call joining its queue now to take until its batch has
  run (``Batcher.expected_answer``: the batches ahead and its own x recent batch time; 0 for an idle model),
  plus what the call already waited since its head arrived (a busy event loop getting to it), must not exceed
  ``max_queue_s``: the budget bounds when an admitted call is expected to be answered, the latency an operator
  promises with it.

A refusal's ``Retry-After`` spreads the refused clients' returns (``Returns``): each refusal books the next
free place in a schedule that lets 3 % of the model's served rate come back each second (at least 20 a second),
so under a flood the refused are told to come back over the next seconds instead of all within the next one, and
the refusals and returns they cost stay a small share of the server's work (docs/overload.md). A refusal given
on a connection the front end names keeps its place until its time comes, its client comes back (refused again
or admitted) or the connection closes (``release``): the schedule keeps room for every client still waiting.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable

from .errors import Overloaded

#: ``Retry-After`` (seconds) when a model is over its in-flight limit: queues drain in well under a second
OVERLOADED_RETRY_AFTER_S = 1
#: the share of a model's served rate that its refused clients are scheduled to come back at. A refusal alone costs
#: a tenth of a served request, but each is a client's return too, on a connection idle for seconds, and under a
#: lasting flood cutting the refusals a second by half or more raised the requests served by 15-28 % (docs/overload.md)
RETURN_SHARE = 0.03
#: refused clients may come back at least this many a second, however slowly the model serves
MIN_RETURNS_PER_S = 20.0
#: the longest ``Retry-After`` a refusal carries
MAX_RETRY_AFTER_S = 30
#: the most connections whose places the gate keeps at once (``ModelGate.places``); past it, a refusal's place is
#: kept as a refusal of a connection not named is
MAX_PLACES = 100_000
#: the most refusal details a gate keeps formatted (``ModelGate.refusal``)
_DETAILS_KEPT = 256
#: how long after its last refusal the gate stays ``refusing`` (until a front end finds room: ``DataPlane.shed``)
REFUSING_FOR_S = 1.0
#: a model none of whose calls left its gate for this long was idle: the served rate is not measured across it
IDLE_S = 0.25


class Served:
    """One model's served rate: calls that left its gate a second, over windows of a second, or less where the
    model went idle (no call left for ``IDLE_S``, with none left in flight, or for over a second) and the window
    ends there. Measured as calls leave, not as refusals come: the schedule of returns needs it at a flood's first
    refusal, and a window that spanned the quiet before a flood would take the model for a slow one. (Measured
    between refusals, it was unknown at the first ones, which were booked at ``MIN_RETURNS_PER_S``: up to 22 s
    ahead for a flood of 640 clients; docs/overload-log.md.)"""

    __slots__ = ("count", "emptied", "last", "rate", "start")

    def __init__(self, now: float) -> None:
        self.start = now  # the window being counted
        self.count = 0
        self.last = now  # the last call that left
        self.emptied = True  # whether it left none in flight
        self.rate = 0.0  # the last whole window's rate (0: none yet)

    def left(self, now: float, inflight: int) -> None:
        gap = now - self.last
        # idle since the last: the window ends there, a new one starts. Not while calls were in flight: a batch
        # that runs longer than IDLE_S is serving, and its calls leave together (unless a second passed: a call
        # held that long, e.g. reading a slow body, is not taken for serving)
        if gap > IDLE_S and (self.emptied or gap > 1.0):
            self._close(self.last)
            self.start, self.count = now, 0
        elif now - self.start >= 1.0:
            self._close(now)
            self.start, self.count = now, 0
        self.count += 1
        self.last = now
        self.emptied = not inflight

    def _close(self, end: float) -> None:
        span = end - self.start
        if span >= 0.1:  # (a shorter one says little: a batch or two)
            self.rate = self.count / span

    def per_s(self) -> float:
        """The last window's rate; before one, the window so far's, once it spans a tenth of a second."""
        if self.rate:
            return self.rate
        span = self.last - self.start
        return self.count / span if span >= 0.1 else 0.0


class Returns:
    """When one model's refused clients are told to come back: each refusal books the next place in a schedule
    of ``max(RETURN_SHARE x served rate, MIN_RETURNS_PER_S)`` returns a second, starting now (the served rate:
    ``Served``). The refusals are counted over windows between refusals at least a second apart.

    For refusals of clients it cannot follow, the schedule holds at most the places of the refusals of the last
    such window and of this one: places booked before that are forgotten, whether their clients still wait or have
    gone (for clients it follows, below). Without that bound a flood books the
    schedule to its end (``MAX_RETRY_AFTER_S``), and for as long again after the flood every refusal, of a server
    merely busy, tells its client to wait behind returns of clients that came back early or have gone: half the
    served rate lost for half a minute (docs/overload.md). The price: under a flood that lasts, returns booked over
    forgotten places come back beside those places' clients, more than the schedule's rate. The bound grows by
    one place with each refusal of this window, so each refusal still books a place of its own (below
    ``MAX_RETRY_AFTER_S``): refusals that come together (a burst, the first ones after the window turns) are
    spread over the schedule, not all told to come back together at the bound.

    **Places kept for connections** (``Place``, ``ModelGate.book``'s ``client``). That bound alone let the returns of
    a flood that lasts grow with the square root of its clients: each window's refusals bounded the next window's
    schedule, so its waits stayed a second or two however many clients waited, and each client was refused again
    every second or two (at 1,920 connections, about 680 refusals a second where the schedule's rate was 500;
    docs/overload-log.md, 2026-12-07 14:10). So a refusal on a connection the front end names keeps its place until
    its time comes, the connection comes back (refused again or admitted: ``ModelGate.enter``) or closes
    (``ModelGate.release``), and the schedule reaches at least as far ahead as the places kept take: a client still
    connected and waiting is one that will come back, one that left frees its place at once. A place (``Place``)
    is kept, and counted in ``live``, exactly while ``owners`` holds it for its client. Places are let go in the
    order they were booked, each once those before it are due (after the schedule's bound shrank, one booked
    sooner than one before it is kept until that one is due)."""

    __slots__ = ("booked", "live", "owners", "places", "refused", "refused_rate", "since")

    def __init__(self, now: float, owners: dict[Hashable, Place] | None = None) -> None:
        self.booked = now  # the last booked return
        self.since = now  # the start of the window of the refused rate
        self.refused = 0  # refusals in this window
        self.refused_rate = 0.0  # refusals a second in the last window
        self.places: deque[Place] = deque()  # the places booked for clients, in booking order
        self.live = 0  # this schedule's places ``owners`` holds
        #: each client's kept place, the gate's for all its models (``ModelGate.places``)
        self.owners: dict[Hashable, Place] = {} if owners is None else owners

    def retry_after(self, now: float, served_per_s: float, at_least: int, client: Hashable | None = None) -> int:
        """The seconds to tell one refusal; ``client``: its connection, whose place is kept (``owners``) until
        ``ModelGate.release`` or its time comes."""
        elapsed = now - self.since
        if elapsed >= 1.0:
            self.refused_rate = self.refused / elapsed
            self.since, self.refused = now, 0
        self.refused += 1
        places = self.places
        if places and places[0][0] <= now:
            self.expire(now)
        # (comparisons, not min and max: this runs for every refusal under a flood)
        rate = RETURN_SHARE * served_per_s
        step = 1.0 / (rate if rate > MIN_RETURNS_PER_S else MIN_RETURNS_PER_S)
        # booked no further than the longest Retry-After (a flood refused beyond it is told that anyway), nor than
        # the places the last window's refusals and this one's take (see the class's docstring): a sum, not the
        # larger of the two, so that the bound moves a place on with each refusal, as the booking does, and
        # refusals that come together are not all booked at the bound
        horizon = (self.refused_rate + self.refused) * step
        if (kept := (self.live + 1) * step) > horizon:
            horizon = kept
        if horizon > MAX_RETRY_AFTER_S:
            horizon = MAX_RETRY_AFTER_S
        booked = (self.booked if self.booked > now else now) + step
        if booked > now + horizon:
            booked = now + horizon
        self.booked = booked
        wait = math.ceil(booked - now)
        if wait < at_least:
            wait = at_least
        if client is not None:
            owners = self.owners
            place = owners[client] = (booked, self, client)
            places.append(place)
            self.live += 1
            if len(places) > 2 * self.live + 64:
                # places let go before their time (their clients came back or left) pile up behind the kept ones:
                # a client retrying at once, holds off, books one each refusal, up to 30 s ahead
                self.places = deque(p for p in places if owners.get(p[2]) is p)
        return wait if wait < MAX_RETRY_AFTER_S else MAX_RETRY_AFTER_S

    def expire(self, now: float) -> None:
        """Lets go of the places whose time has come (those booked before them due too)."""
        places, owners = self.places, self.owners
        while places and places[0][0] <= now:
            place = places.popleft()
            if owners.get(place[2]) is place:
                del owners[place[2]]
                self.live -= 1


#: one refused client's place in a schedule of returns: when it is due, the schedule, the client (a tuple, not a
#: class: one is made for every refusal under a flood)
Place = tuple[float, Returns, Hashable]


class ModelGate:
    def __init__(
        self, max_inflight: int, max_queue_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_inflight = max_inflight
        self.max_queue_s = max_queue_s
        self.inflight: dict[str, int] = {}
        # calls that left the gate, per model name, as a rate (``Served``, for ``Returns``); names are the
        # operator's, few
        self.served: dict[str, Served] = {}
        self.returns: dict[str, Returns] = {}
        self.clock = clock
        #: whether the gate has refused lately: set by a refusal, cleared only once ``REFUSING_FOR_S`` have passed
        #: since the last one and a front end asking ``refusal`` finds room (``DataPlane.shed``), or a call is
        #: admitted (``enter``). While it is set, a
        #: front end asks before reading each request. An admission does not clear it: under overload admissions
        #: and refusals alternate, and each head read after an admission went through the app, whose refusal
        #: costs about twice the one on the head (docs/overload-log.md, 2026-12-06)
        self.refusing = False
        #: when the last refusal was given (its ``Retry-After`` booked)
        self.refused_at = -math.inf
        #: the place each named connection's last refusal booked (``book``'s ``client``), until ``release``
        self.places: dict[Hashable, Place] = {}
        #: bumps as a call enters or leaves: a decision on the counts in flight holds while it stays
        self.moves = 0
        #: ``refusal``'s details given lately, by model and figures, formatted once: at an in-flight limit the same
        #: one again and again; for queue time, one per expected and waited milliseconds
        self._details: dict[tuple[str, int, int, float], str] = {}

    def retry_after(self, model: str, at_least: int, client: Hashable | None = None) -> dict[str, str]:
        """The ``Retry-After`` header for one refusal of ``model`` (``book``'s seconds)."""
        return {"retry-after": str(self.book(model, at_least, client))}

    def book(self, model: str, at_least: int, client: Hashable | None = None) -> int:
        """The ``Retry-After`` seconds for one refusal of ``model`` (or one request dropped for its queue time): its
        next place in the schedule of returns. Call it only for a refusal given: it stamps ``refused_at`` (so while
        requests are dropped, the gate stays ``refusing``, and heads are asked on arrival). ``client``: the
        connection it is given on, if the front end names it and calls ``release`` when it closes: its place is kept
        until then (``Returns``), and its previous place, if any, freed (its client came back)."""
        now = self.clock()
        served = self.served.get(model)
        returns = self.returns.get(model)
        if returns is None:
            returns = self.returns[model] = Returns(now, self.places)
        self.refused_at = now
        if client is not None:
            places = self.places
            before = places.pop(client, None)
            if before is not None:
                before[1].live -= 1  # its client came back: that place is no longer kept
            elif len(places) >= MAX_PLACES:
                for each in self.returns.values():  # places due, of models refused no more since
                    each.expire(now)
                if len(places) >= MAX_PLACES:
                    client = None
        return returns.retry_after(now, 0.0 if served is None else served.per_s(), at_least, client)

    def release(self, client: Hashable) -> None:
        """``client`` came back and was admitted, or its connection closed: the place its last refusal booked, if
        any, is no longer kept."""
        place = self.places.pop(client, None)
        if place is not None:
            place[1].live -= 1

    def enter(
        self,
        model: str,
        limit: int | None = None,
        max_queue_s: float | None = None,
        expected_s: float = 0.0,
        waited_s: float = 0.0,
        client: Hashable | None = None,
    ) -> None:
        """Count one more call into ``model``, or raise ``Overloaded`` at its in-flight limit or when
        ``waited_s`` (since the request's head arrived) plus ``expected_s`` (until its batch has run) is over the
        queue-time budget (``limit``, ``max_queue_s`` override the gate's own, e.g. from the model's model.toml).
        ``client``: the caller's connection, as ``book`` takes it."""
        refused = self.refusal(model, limit, max_queue_s, expected_s, waited_s)
        if refused is not None:
            self.refusing = True
            detail, at_least = refused
            raise Overloaded(detail, headers=self.retry_after(model, at_least, client))
        if self.refusing and self.clock() - self.refused_at > REFUSING_FOR_S:
            # a while since the last refusal: cleared here too, for front ends that never ask on the head (gRPC,
            # jobs), where nothing else would clear it
            self.refusing = False
        self.inflight[model] = count + 1 if (count := self.inflight.get(model)) else 1
        self.moves += 1
        if client is not None and self.places:
            self.release(client)  # a refused client back and admitted: it waits no more

    def refusal(
        self,
        model: str,
        limit: int | None = None,
        max_queue_s: float | None = None,
        expected_s: float = 0.0,
        waited_s: float = 0.0,
    ) -> tuple[str, int] | None:
        """Why ``enter`` would refuse a call now, and the least ``Retry-After`` for it; ``None`` if it would not.
        Changes nothing."""
        count = self.inflight.get(model, 0)
        cap = self.max_inflight if limit is None else limit
        details = self._details
        if count >= cap:
            key: tuple[str, int, int, float] = (model, count, -1, -1.0)
            detail = details.get(key)
            if detail is None:
                detail = (
                    f"model '{model}' already has {count} requests in flight, the limit (max_inflight); retry shortly"
                )
                if len(details) >= _DETAILS_KEPT:
                    details.clear()
                details[key] = detail
            return detail, OVERLOADED_RETRY_AFTER_S
        budget = self.max_queue_s if max_queue_s is None else max_queue_s
        if budget is not None and waited_s + expected_s > budget:
            # in whole milliseconds, as the detail shows them (round, as format's ".0f", halves to even)
            key = (model, round(expected_s * 1000), -1 if waited_s < 0.0005 else round(waited_s * 1000), budget)
            detail = details.get(key)
            if detail is None:
                waited = "" if key[2] < 0 else f" after the {key[2]} ms it waited to be read"
                detail = (
                    f"model '{model}' would answer this request in about {key[1]} ms{waited}, more than "
                    f"the queue-time limit of {budget * 1000:g} ms (max_queue_ms); retry shortly"
                )
                if len(details) >= _DETAILS_KEPT:
                    details.clear()
                details[key] = detail
            return detail, max(OVERLOADED_RETRY_AFTER_S, math.ceil(expected_s))
        return None

    def leave(self, model: str) -> None:
        self.moves += 1
        left = self.inflight[model] - 1
        if left:
            self.inflight[model] = left
        else:
            del self.inflight[model]  # a name nobody serves leaves nothing behind
        now = self.clock()
        served = self.served.get(model)
        if served is None:
            served = self.served[model] = Served(now)
        served.left(now, left)
