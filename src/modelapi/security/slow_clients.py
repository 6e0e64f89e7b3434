"""Header-read timeout and header-size limit for uvicorn's HTTP protocol (httptools).

uvicorn bounds the idle time between keep-alive requests (``timeout_keep_alive``) but not the time a client
takes to send a request's head, nor the head's size: a client that connects and sends nothing, or trickles a
header a byte at a time (slowloris), holds its connection forever, and one that sends endless headers grows
the server's memory. This protocol answers such a client ``408 Request Timeout`` after ``header_timeout_s``
and ``431 Request Header Fields Too Large`` after ``max_header_bytes``, and closes the connection. The body
has its own deadline, enforced by ``http/middleware.py``; a body still to come once its request was answered
(refused on its head, say), which nothing reads, gets the same deadline here, from the answer, and the
keep-alive timeout between its reads (as nginx's ``lingering_timeout``): the connection closes when either passes
(``_await_unread_body``). A chunked body's trailers are held to the head's size
limit and dropped, never merged into the request's headers (``on_chunk_header``).

It also stamps each request's scope with the ``time.monotonic()`` its head was complete (``ARRIVED``): the data
plane counts the wait from then against the queue-time bound (``context.CallContext.arrived``). And with
``IN_PROGRESS`` the server's requests in progress (uvicorn's set of their tasks, this one's included, shared by
every connection): a call that is the only one needs no batch to wait for (``context.CallContext.in_progress``).
And with ``GONE`` whether its client has gone (the connection closing or lost): the model's queue drops the rows
of a request whose client left as a batch forms (``context.CallContext.gone``), with no task per request to watch.
A request whose whole body has arrived is marked ``BODY_IN`` (the usual case for a small body, read with its
head): reading it cannot wait, so the middleware arms no body-read timer for it. uvicorn's proxy step (its
``ProxyHeadersMiddleware``: the client and scheme a trusted proxy names in X-Forwarded-For and -Proto) is done
here on each head (``http/forwarded.py``), not as a layer in front of the app: the server's app is what runs.

Under overload it may refuse a request on its head (``Shedder``: ``http/shedding.py``). When no earlier answer on
the connection is still to come, it writes the refusal itself, head and body in one write, without a request
cycle, a task or ASGI messages (``_answer_on_head``): its scope past the proxy step, framed
and followed as uvicorn's cycle would (its ``on_response_complete``: keep-alive, the next pipelined request),
the request's unread body dropped as it comes (within ``body_timeout_s``, and ``keep_alive_s`` between its
reads). Otherwise (a request pipelined behind one still in progress, one the refusal hands on to the app, writes
paused for a client that does not read) uvicorn's cycle runs the refusal instead of the server's app, on the same
scope. A read that is one whole request on an idle connection may be refused before the parser sees it at all
(``Shedder.refuse_read``, ``_refuse_read``); the keep-alive timer is then left armed, and when due waits out the
keep-alive time from the last such answer (and, while a read waits its turn under pacing, as long again).

Every answer it writes has its access line (``http/access.access_line``, as every other answer's): the 503 on the
head (``http/shedding.py`` writes it), and the 408 or 431 for a slow or oversized head or trailer section
(``_refusal_line``: on the direct path and when a cycle runs it in place of the app, with the request id by the
middleware's rules, also sent as ``X-Request-ID``); a 431 for the trailers of a request whose app is running is
that app's line (``REFUSED``). A head not read past its request line is logged with ``-`` for method and path.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sized
from typing import Any, ClassVar, Final, Protocol
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from ..http.access import ACCESS_LOG, access_line, scan_headers
from ..http.forwarded import Forwarded
from ..http.pacing import Pacing
from ..http.transport import HeadHolding

#: the scope key of the ``time.monotonic()`` when the request's head was complete
ARRIVED = "modelapi.arrived"
#: the scope key of the server's requests in progress (a sized collection, this request's included)
IN_PROGRESS = "modelapi.in_progress"
#: the scope key set when the request's whole body is in (``receive`` returns it without waiting)
BODY_IN = "modelapi.body_in"
#: the scope key of the status the protocol answered the request with itself while its app ran (431: its trailer
#: section over the limit), for the access line: the app saw the client gone
REFUSED = "modelapi.refused"
#: the scope key of the connection the request came on: an int no other connection of the process has had, so
#: that what was said to a connection (a ``Retry-After``, ``http/holds.py``) is not taken for a later connection
#: from the same address and port
CONNECTION = "modelapi.connection"
_CONNECTIONS = itertools.count(1)
#: the scope key of whether the request's client has gone (its connection's ``transport.is_closing``: closing or
#: lost), a check the model's queue makes as a batch forms (``context.CallContext.gone``), with no task to watch it
GONE = "modelapi.gone"
#: the scope key of the app that refuses a request on its head (``Shedder.app_for``'s), until it runs
_REFUSAL = "modelapi.refusal"
#: the first bytes of a request taken at once under a flood (``http/pacing.py``): cheap to answer, and probes
_TAKEN_AT_ONCE = (b"GET ", b"HEAD ")
_STATUS_503 = STATUS_LINE[503]
#: the most bytes a connection keeps while it waits its turn before it stops reading (a client that pipelines)
_WAITING_BYTES = 65536


class Refusal(Protocol):
    """A request refused on its head (``Shedder.app_for``'s)."""

    def answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The refusal given now: its status, headers and body for the protocol to write (all else that giving
        it does, done); ``None``, with nothing done, for a request the server's app answers otherwise."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The refusal as an ASGI app, for a request cycle to run: it sends the answer, or hands the request on."""


class Shedder(Protocol):
    """Asked on each request's head: its refusal there, under overload (``http/shedding.py``). ``app``: the
    server's (behind uvicorn's proxy step, which the protocol does itself), for a request the refusal hands on."""

    def app_for(self, method: bytes, url: bytes, app: ASGIApp, arrived: float) -> Refusal | None:
        """The refusal of the request whose head this is, or ``None``; ``arrived``: when its head arrived
        (``ARRIVED``: a head that waited its turn has waited since)."""

    def refusing(self) -> bool:
        """Whether requests may be refused on their heads now (for pacing, such a head counts as work in
        progress)."""

    def stop(self) -> None:
        """The server is stopping: early retries the app holds are answered now (``http/holds.py``); a connection
        whose retry it holds itself (``Held``) answers it in its own shutdown."""

    def closed(self, client: int) -> None:
        """The connection whose ``CONNECTION`` is ``client`` closed (a refused client that left: its place in the
        schedule of returns is free)."""

    def refuse_read(
        self,
        data: bytes,
        arrived: float,
        client: int,
        https: bool,
        root_path: str,
        max_head: int,
        in_progress: Sized | None = None,
    ) -> bytes | Held | LetThrough | None:
        """The refusal of a request whole in the read ``data`` (nothing after it), as the bytes after its status
        line and the server's default headers, all else giving it does done; an early retry held (``Held``: its
        answer comes when the hold ends); ``LET_THROUGH``, with nothing done, for a request it judged just as
        ``app_for`` would and found room for (the parser takes the read, and its head is not judged again); or
        ``None``, with nothing done, to parse the read as any. ``client``: the connection's ``CONNECTION``;
        ``max_head``: the head's size limit; ``in_progress``: the server's requests in progress
        (``IN_PROGRESS``)."""


class LetThrough:
    """``Shedder.refuse_read``'s answer for a request whole in one read that it judged and did not refuse: the
    parser takes the read, and ``app_for`` is not asked again on its head, whose judgement, made a moment before
    in the same call, would be the same but for the clock's few microseconds more (under a flood the second one,
    with the route's match, was about 1.5 % of a served request's instructions: docs/overload.md)."""

    __slots__ = ()


LET_THROUGH: Final = LetThrough()


class Held(Protocol):
    """An early retry held without a task (``Shedder.refuse_read``'s): the connection waits for its answer."""

    def answer_to(self, write: Callable[[bytes], None]) -> None:
        """Who writes the answer (the bytes after the status line and the server's default headers) when the
        hold ends."""

    def forget(self) -> None:
        """The connection is lost: no answer."""

    def end_now(self) -> None:
        """The server is stopping: answered now, through the writer."""


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Runs the refusal ``Shedder.app_for`` gave the request (its scope past the proxy step, as the app's)."""
    await scope.pop(_REFUSAL)(scope, receive, send)


def _after_last_empty_line(data: bytes) -> int:
    """Where ``data`` goes on after its last empty line (the end of a head, or of a chunked body and its
    trailers); 0 with none. A head still arriving at the end of ``data`` lies wholly after it: it has no empty line
    yet (its lines end with CRLF, as llhttp requires)."""
    found = data.rfind(b"\n\r\n")
    return 0 if found < 0 else found + 3


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # (the parser's callbacks, run on every request, call uvicorn's by name: ``super()`` builds an object each time)
    # this class's own state in slots, uvicorn's in the instance's dict: CPython shares a dict's keys among the
    # instances of a class (and reads an attribute at a fixed place) for at most 30 attributes; uvicorn's
    # protocol has 28, and with these in the dict every attribute of the connection, uvicorn's too, would be
    # looked up by name on each use
    __slots__ = (
        "_begun_in_read",
        "_body_deadline",
        "_body_due_at",
        "_body_read_at",
        "_body_timer",
        "_connection_id",
        "_discarding",
        "_forwarded",
        "_forwarding",
        "_head_bytes",
        "_head_deadline",
        "_head_timer",
        "_held",
        "_holding",
        "_in_body",
        "_in_head",
        "_in_message",
        "_in_trailers",
        "_judged",
        "_quiet_since",
        "_read_at",
        "_read_consumed",
        "_refusal_due",
        "_refused_scope",
        "_stopping",
        "_trailer_bytes",
        "_trailer_mark",
        "_trailer_pending",
        "_trailer_sink",
        "_trailers_refused",
        "_waiting",
        "_waiting_bytes",
        "_waiting_paused",
    )
    header_timeout_s: float = 10.0
    max_header_bytes: int = 65536
    #: the time a request answered before its body is in (a refusal on its head) has for the rest of that body
    body_timeout_s: float = 60.0
    shedding: Shedder | None = None
    pacing: Pacing | None = None
    #: the server's shutdown delay has begun (``server._Server``, ``--shutdown-delay``): every answer from now on
    #: closes its connection, as Go's ``Server.Shutdown`` and nginx's graceful stop do. Why: a client on a kept
    #: connection comes back on a new one, which a balancer sends elsewhere, or, past the delay, finds refused
    #: (no request sent); kept, the connection would be closed idle when the shutdown begins, perhaps just as
    #: the client's next request is on its way, and that request lost (docs/deployment.md). Set on the class
    #: (``close_after_answers``): every connection of the process's server, those still to come included
    closing: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._head_bytes = 0
        self._in_head = False
        self._begun_in_read = False  # a request began inside the read being parsed (``_take``)
        self._read_consumed = 0  # what of that read the requests before the one being read took
        #: a 408 or 431 for a head read behind requests whose answers are still to come (``_refuse``)
        self._refusal_due: tuple[int, str, str] | None = None
        self._refused_scope: dict[str, Any] | None = None  # and the request it refuses, for its access line
        self._in_message = False  # between a request's first byte and its end: its bytes are taken at once
        # the reads kept while the connection waits its turn (pacing), each with its time
        self._waiting: list[tuple[float, bytes]] | None = None
        self._waiting_bytes = 0
        self._read_at = 0.0  # while kept reads are taken: the time the one being parsed was read
        # the read being parsed holds one request whose head ``refuse_read`` judged and let through (``LET_THROUGH``)
        self._judged = False
        self._waiting_paused = False
        # uvicorn's proxy step, done on each head here (http/forwarded.py) instead of as a layer in front of the app:
        # every request's cycle, and every refusal, runs the app behind it on a scope the step has seen
        self.app, self._forwarded = Forwarded.unwrap(self.app)
        self._forwarding: Forwarded | None = None  # the step, for a connection whose client it trusts
        # the request being parsed was answered on its head without a cycle (or dropped): its body is not read
        self._discarding = False
        self._in_body = False  # between the head of a request started (or answered) and the end of its body
        # the one timer of the body of a request answered before that body is in (``_await_unread_body``): due at
        # the earlier of its deadline and keep_alive_s after its last read (the timer's due time, as it was armed)
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0
        self._body_read_at = 0.0
        self._body_due_at = 0.0
        self._stopping = False  # the server is shutting down: an answer given now closes the connection
        # the trailer section of a chunked body (``on_chunk_header``): after a chunk-size line and no chunk data since,
        # the last chunk's; its fields' bytes as handed over, an estimate of the one still arriving (kept by
        # httptools until it ends), and whether a field or the section began in the read being parsed
        self._in_trailers = False
        self._trailer_bytes = 0
        self._trailer_pending = 0
        self._trailer_mark = False
        # a trailer section over the limit was refused: nothing more is read from the connection, which ends
        # with that refusal (``_refuse_trailers``)
        self._trailers_refused = False
        # made at a chunked body's first chunk (``on_chunk_header``), dropped with the connection: it holds a bound
        # method of this protocol, a reference cycle that would leave every closed connection to the collector
        self._trailer_sink: _TrailerSink | None = None
        self._connection_id = next(_CONNECTIONS)
        # the last answer written by ``_refuse_read``, which leaves the keep-alive timer as it was: when due, the
        # timer is armed again for the keep-alive time from this
        self._quiet_since = 0.0
        #: an early retry held without a task (``_refuse_read``): reads that come meanwhile wait in ``_waiting``
        self._held: Held | None = None

    @classmethod
    def close_after_answers(cls) -> None:
        """From now on every answer closes its connection (``closing``), for requests read from now on; those
        already read are the connections' own (``close_after_answer``). Idle connections stay open until the
        keep-alive timeout or the server's shutdown closes them (a client may be sending on one now). Only on a
        class ``protocol_class`` made, one server's: on this one it would reach every server of the process."""
        if cls is GuardedHttpToolsProtocol:
            raise TypeError("close_after_answers: on a server's own class (protocol_class), not the base class")
        cls.closing = True

    def close_after_answer(self) -> None:
        """The requests already read on this connection close it after their answers (``closing``, for those
        read before it was set): the last one read (the one in progress when none is pipelined) and those
        pipelined. Not one whose answer has begun: its head went out without ``connection: close``, and closing
        after it would take its client unawares, perhaps as its next request is on the way; that next request,
        read after the flag, is answered with ``connection: close``."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False
        for queued, _ in self.pipeline:
            queued.keep_alive = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        forwarded = self._forwarded
        # a connection's client never changes: whether its X-Forwarded- headers count is asked once
        self._forwarding = forwarded if forwarded is not None and forwarded.trusts(self.client) else None
        self._holding = HeadHolding(transport)
        self.transport = self._holding  # type: ignore[assignment]  # the request cycles write through it
        self._start_head()

    def on_response_complete(self) -> None:
        if self._holding.held is not None:
            self._holding.flush()  # a head held for a body that never comes (the answer to HEAD)
        HttpToolsProtocol.on_response_complete(self)
        due = self._refusal_due
        if due is not None and (self.cycle is None or self.cycle.response_complete):
            self._refusal_due = None  # every answer before it is out: now the refusal (``_refuse``)
            if not self.transport.is_closing():
                # with the scope of the head it refuses, as taken then (a later request may have begun since)
                self._write_refusal(*due, self._refused_scope)
            return
        if self._waiting is not None:  # the next request, read meanwhile, waits its turn: the connection is not idle
            self._unset_keepalive_if_required()
        elif self._in_body and not self._discarding and self.cycle.response_complete:
            # the request whose body is arriving was answered by its cycle (a refusal pipelined behind an answer,
            # say) before that body is in: what is left of it has its deadline from now. (One answered on its head
            # gets its deadline once the read that brought the head is parsed, ``_take``: its body is often in
            # that read, and then needs none.)
            self._await_unread_body()

    def shutdown(self) -> None:
        # uvicorn closes a connection with no request in progress and lets one in progress finish: a request read
        # but waiting its turn is one in progress (taken now, out of turn: the server is stopping)
        self._stopping = True
        held = self._held
        if held is not None:
            try:
                held.end_now()  # answered now, with connection: close (``_write_held``)
            finally:
                self._held = None  # (answered or not: the connection closes below, what waits dropped)
        if self._waiting is not None:
            self.take_waiting()
        if self.shedding is not None:
            self.shedding.stop()  # a held request is one in progress too: answered now, not at its Retry-After
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting = None
        if self.shedding is not None:
            self.shedding.closed(self._connection_id)
        held = self._held
        if held is not None:  # its client left: no answer, nothing counted
            self._held = None
            held.forget()
        self._end_head()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._end_body()
        # uvicorn cancels the keep-alive timer only for a connection lost without an error: one reset by its client
        # would be held by the timer until it is due (and, on asyncio's loop, then left in a cycle with its handle)
        self._unset_keepalive_if_required()
        super().connection_lost(exc)
        # the requests still waiting their turn never run now, and each one's cycle holds this protocol's
        # ``on_response_complete`` (uvicorn lets go of it only once the cycle has run): a reference cycle otherwise
        for cycle, _ in self.pipeline:
            cycle.on_response = _not_run
        sink = self._trailer_sink
        if sink is not None:  # the cycle through its bound method, broken: the connection is freed when dropped
            self._trailer_sink = None
            if self.headers is sink:  # type: ignore[comparison-overlap]
                self.headers = sink.head

    def data_received(self, data: bytes) -> None:
        if self._refusal_due is not None or self._trailers_refused:  # the connection ends with a refusal due
            return
        waiting = self._waiting
        if waiting is not None:  # earlier bytes wait their turn: these join them, in order
            waiting.append((time.monotonic(), data))
            self._waiting_bytes += len(data)
            if not self._waiting_paused and self._waiting_bytes > _WAITING_BYTES:
                self._waiting_paused = True
                self.transport.pause_reading()
            return
        pacing = self.pacing
        if (
            pacing is not None
            and not self._in_message
            and not data.startswith(_TAKEN_AT_ONCE)
            # busy: requests in progress besides one that may still be finishing after its answer went out (a
            # client alone sends its next request as that answer comes), or heads being refused: each is answered
            # as it is read, with no task, but is as much work in the turn that reads it
            and pacing.later(self, len(self.tasks) > 1 or (self.shedding is not None and self.shedding.refusing()))
        ):
            self._waiting = [(time.monotonic(), data)]
            self._waiting_bytes = len(data)
            # not idle now, but the keep-alive timer stays armed: when due, it finds the read waiting and waits
            # again (``timeout_keep_alive_handler``), rather than be cancelled here and armed after each answer
            return
        self._take(data)

    @property
    def gone(self) -> bool:
        """Whether the connection closed while it waited its turn (pacing)."""
        return self._waiting is None

    def take_waiting(self) -> None:
        waiting = self._waiting
        if waiting is None or self._held is not None:
            # the connection closed while it waited; or a retry is held on it, whose answer comes first and then
            # takes what waits (``_write_held``): pacing's queue, or the head's timer, may still ask
            return
        self._waiting = None
        if self.transport.is_closing():
            # the server closed it meanwhile (an answer with connection: close; its loss not yet told): what it
            # kept is dropped unread, as uvicorn starts no request pipelined behind such an answer
            return
        if self._waiting_paused:
            self._waiting_paused = False
            self.transport.resume_reading()
        # read as it came, not joined: the head size is counted a read at a time (joined, kept requests would
        # count toward the head that the last one began), and a read that ends the connection ends the reading, as
        # does one that puts a head over the limit behind an answer still to come (its refusal due: ``_refuse``;
        # read on, the head would be completed and run before it)
        try:
            for i, (read_at, data) in enumerate(waiting):
                self._read_at = read_at
                self._take(data)
                if self.transport.is_closing() or self._refusal_due is not None:
                    break
                if self._held is not None:  # held: the reads after it wait for its answer
                    assert self._waiting is not None
                    self._waiting += waiting[i + 1 :]
                    self._waiting_bytes = sum(len(d) for _, d in self._waiting)
                    break
        finally:
            self._read_at = 0.0

    def _take(self, data: bytes) -> None:
        shedding = self.shedding
        # (a slice, not startswith: that parses its arguments on each call)
        if shedding is not None and data[:5] == b"POST " and shedding.refusing() and self._refuse_read(data):
            return
        self._begun_in_read = False
        self._read_consumed = 0
        self._trailer_mark = False
        try:
            HttpToolsProtocol.data_received(self, data)
        finally:
            self._judged = False  # (its head's, if the parser got to it: not the next read's)
        if self._in_trailers:
            self._count_trailers(data)
        if self._in_head:
            if self._begun_in_read:
                # the head began inside this read, after what the requests before it took of the read: their heads
                # and their bodies' bytes as the parser handed them over. A chunked body's framing (chunk-size
                # lines, line ends, trailers) is not handed over, but such a body ends with an empty line, as
                # every head does, and the head still arriving has none: it lies after the read's last one
                after = len(data) - self._read_consumed
                if after > 0:
                    after = min(after, len(data) - _after_last_empty_line(data))
                self._head_bytes = max(0, after)
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(
                    431, "Request Header Fields Too Large", f"the request head is over {self.max_header_bytes} bytes"
                )
        elif self._in_body:
            if self._body_timer is not None:  # an answered request's body being dropped: the client is not idle
                self._body_read_at = self.loop.time()
            elif self._discarding or (self.cycle is not None and self.cycle.response_complete):
                self._await_unread_body()  # answered on its head (or early), its body not all in with this read

    def _refuse_read(self, data: bytes) -> bool:
        """Refuses a request that came whole in one read on an idle connection (``Shedder.refuse_read``), without
        the parser: its answer in one write, the connection kept. The parser never sees the read, and stays where
        it was, between requests. ``False``, with nothing done, where the parser is to take the read: a request
        begun or answers still to come, the server stopping, ``--limit-concurrency``, writes paused, uvicorn's
        access log on. An early retry in such a read is held instead (``Held``): its answer is written when the
        hold ends (``_write_held``), and what the client sends meanwhile waits for it in ``_waiting``."""
        cycle = self.cycle
        if (
            self._in_message
            or self._in_body
            or self._stopping
            or self.closing  # (the parser's path frames the answer with ``connection: close``)
            or self.pipeline
            or (cycle is not None and not cycle.response_complete)
            or self.limit_concurrency is not None
            or self.access_log  # uvicorn's own access line (off in modelapi's server): the parser's path writes it
            or self.flow.write_paused
            or self._holding.held is not None
            or self._holding.transport.is_closing()
        ):
            return False
        shedding = self.shedding
        assert shedding is not None
        arrived = self._read_at or time.monotonic()
        answer = shedding.refuse_read(
            data,
            arrived,
            self._connection_id,
            self.scheme == "https",
            self.root_path,
            self.max_header_bytes,
            self.tasks,
        )
        if answer is None:
            return False
        if isinstance(answer, LetThrough):
            self._judged = True
            return False
        self._in_head = False  # (``_end_head``) a head was whole in the read: its timer, when due, finds none
        if not isinstance(answer, bytes):
            # an early retry held: the connection is not idle until its answer (the keep-alive timer, when due,
            # waits again), and what it sends meanwhile waits in ``_waiting`` until then
            self._held = answer
            self._waiting = []
            self._waiting_bytes = 0
            answer.answer_to(self._write_held)
            return True
        self._write_answer(answer)
        return True

    def _write_held(self, answer: bytes) -> None:
        """The answer to the early retry held on this connection (``_refuse_read``), then the reads that came
        meanwhile; with ``connection: close`` once the server is stopping."""
        self._held = None
        if self._holding.transport.is_closing():
            return
        if self._stopping or self.closing:
            self._write_answer(b"connection: close\r\n" + answer)
            self.transport.close()
            return
        self._write_answer(answer)
        self.take_waiting()

    def _write_answer(self, answer: bytes) -> None:
        """A 503 written whole on an idle connection (``answer``: the bytes after its status line and the server's
        default headers), and what uvicorn does once an answer is out but the keep-alive timer."""
        default = self.server_state.default_headers
        if default:
            content = [_STATUS_503]
            for name, value in default:
                content += (name, b": ", value, b"\r\n")
            answer = b"".join((*content, answer))
        else:
            answer = _STATUS_503 + answer
        self._holding.transport.write(answer)  # (no head held: nothing to join it to)
        # what uvicorn does once an answer is out, but the keep-alive timer: left armed (or armed, if none is),
        # and armed again when due for the time from now (``timeout_keep_alive_handler``), not cancelled and
        # armed for each answer
        self.server_state.total_requests += 1
        self._quiet_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            handler = self.timeout_keep_alive_handler
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, handler)

    def timeout_keep_alive_handler(self) -> None:
        now = self.loop.time()
        # a read waiting its turn (pacing): not idle; else idle from the last answer ``_refuse_read`` wrote, if
        # one came since the timer was armed
        due = (
            now + self.timeout_keep_alive if self._waiting is not None else self._quiet_since + self.timeout_keep_alive
        )
        if due > now:
            self.timeout_keep_alive_task = self.loop.call_at(due, self.timeout_keep_alive_handler)
            return
        self.timeout_keep_alive_task = None
        HttpToolsProtocol.timeout_keep_alive_handler(self)

    def _head_size(self) -> int:
        """The bytes of the head just read: its URL and headers (each with its ``: `` and line end), and about
        what the request line's method, version and separators take."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 20

    def on_message_begin(self) -> None:
        self._in_message = True
        self._begun_in_read = True
        self._discarding = False
        self._in_trailers = False
        HttpToolsProtocol.on_message_begin(self)
        if not self._in_head:
            self._start_head()

    def on_headers_complete(self) -> None:
        # what of the read being parsed this head took: all of it if it began there, else what the reads before
        # did not already count
        size = self._head_size()
        self._read_consumed += size if self._begun_in_read else max(0, size - self._head_bytes)
        self._end_head()
        # a request is here: the connection is not idle (an answer given on the head earlier in this read armed
        # the keep-alive timer, which would otherwise close the connection under this request)
        self._unset_keepalive_if_required()
        if self.transport.is_closing() or self._refusal_due is not None or self._trailers_refused:
            # an answer given on the head while this read was parsed closed the connection (a refusal to an
            # HTTP/1.0 request, say): as uvicorn starts no request pipelined behind such an answer, none is started.
            # Nor behind a refusal due after answers still to come (``_refuse``): the connection ends with it, and a
            # request run meanwhile would be answered before it, out of order
            self._discarding = True
            return
        if size > self.max_header_bytes:
            # a whole head over the limit in one read (the count per read in ``_take`` sees only a head still
            # arriving at a read's end): refused, its request not started, what follows of it dropped
            self._discarding = True
            self._refuse(
                431, "Request Header Fields Too Large", f"the request head is over {self.max_header_bytes} bytes"
            )
            return
        # its body comes next (an upgrade's bytes are another protocol's)
        self._in_body = not self.parser.should_upgrade()
        scope = self.scope
        if self._forwarding is not None:
            self._forwarding.apply(scope)  # type: ignore[arg-type]
        # a head that waited its turn (pacing) arrived when the read that completed it was in
        arrived = scope[ARRIVED] = self._read_at or time.monotonic()  # type: ignore[literal-required]
        scope[IN_PROGRESS] = self.tasks  # type: ignore[literal-required]  # its task joins them just below
        scope[CONNECTION] = self._connection_id  # type: ignore[literal-required]
        scope[GONE] = self.transport.is_closing  # type: ignore[literal-required]
        shedding = self.shedding
        judged, self._judged = self._judged, False  # (one head's: a second request in the read is asked)
        if shedding is None or judged:
            refuse = None
        else:
            refuse = shedding.app_for(self.parser.get_method(), self.url, self.app, arrived)
        before = self.cycle
        if refuse is None:
            HttpToolsProtocol.on_headers_complete(self)
            # (its task has not run yet: its answer says ``connection: close``; an upgrade makes no cycle)
            if self.closing and self.cycle is not before:
                self.cycle.keep_alive = False
            return
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and self._answer_on_head(refuse):
            return
        # refused on its head behind an answer still to come (or handed on): uvicorn's cycle runs the refusal
        # instead of the server's app (it frames the answer, drops the unread body, keeps the connection and the
        # order of pipelined answers)
        scope[_REFUSAL] = refuse  # type: ignore[literal-required]
        app = self.app
        self.app = _refuse
        try:
            HttpToolsProtocol.on_headers_complete(self)
        finally:
            self.app = app
        if self.closing and self.cycle is not before:
            self.cycle.keep_alive = False

    def _answer_on_head(self, refusal: Refusal) -> bool:
        """Writes the refusal of the request whose head was just read, with no answer before it still to come,
        without a request cycle: the scope filled as uvicorn's ``on_headers_complete`` fills it (the proxy step
        already done on it), the answer framed as uvicorn's cycle frames it (its default headers first, ``connection:
        close`` when the connection is not kept) in one write, then what uvicorn does when an answer is complete.
        ``False``, with the scope as it was, where uvicorn's own path must run: an upgrade, over
        ``--limit-concurrency`` (uvicorn answers those itself), writes paused (the cycle waits for the drain), a
        request the refusal hands on to the app."""
        parser = self.parser
        # writes paused (the client does not read its answers): the cycle waits for them to drain, and the requests
        # behind it wait their turn with reading paused; written here, answers would pile up in the buffer unbounded
        if self.limit_concurrency is not None or parser.should_upgrade() or self.flow.write_paused:
            return False
        scope = self.scope
        http_version = parser.get_http_version()
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        try:
            answer = refusal.answer(scope)  # type: ignore[arg-type]
        except Exception:
            # raised here, it would end the parsing as a 400 and its traceback be lost: the cycle runs the refusal
            # again, and uvicorn logs what it raises and answers 500, as for any app
            answer = None
        if answer is None:
            return False
        status, headers, body = answer
        # as uvicorn's cycle decides it; shutdown ends a connection after the answer in progress (one taken out of
        # turn by ``shutdown``); and a client waiting for ``100 Continue`` may or may not send the body now: the
        # connection's next bytes could be either, so it is closed (RFC 9110 10.1.1)
        keep_alive = (
            http_version != "1.0"
            and parser.should_keep_alive()
            and not (self._stopping or self.closing)
            and not self.expect_100_continue
        )
        if self.access_log:  # uvicorn's access line, as its cycle writes it (modelapi's server turns it off)
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in headers:
            content += (name, b": ", value, b"\r\n")
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        self._discarding = True  # its body, unread, is dropped as it arrives
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # as after any answer: counted, the keep-alive timer armed, reading resumed
        return True

    def on_body(self, body: bytes) -> None:
        self._in_trailers = False  # a chunk's data: not the last chunk
        self._read_consumed += len(body)
        if not self._discarding:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._in_trailers = False
        self._end_body()
        if not self._discarding:
            HttpToolsProtocol.on_message_complete(self)
            cycle = self.cycle
            if cycle is None or self.parser.should_upgrade():
                return
            if not cycle.response_complete:
                if not cycle.more_body:
                    cycle.scope[BODY_IN] = True  # type: ignore[literal-required]
                    # read on, so that a client leaving while its request waits is seen (``GONE``): a body over
                    # uvicorn's high-water mark paused reading, which only the app's next ``receive`` resumed. What
                    # comes next is the client's EOF or a pipelined request, whose head pauses reading again
                    if self.flow.read_paused and not self.pipeline and not self._waiting_paused:
                        self.flow.resume_reading()
                return
        # answered before its body ended: the reads of that body unset the keep-alive timer the answer armed, so it
        # is armed again now that the connection is idle (else it would stay open, idle, for good). Not while an
        # answer before it is still to come (a head refused behind it, its refusal due): the connection is not
        # idle, and the timer would close it under that answer
        cycle = self.cycle
        if (
            self.timeout_keep_alive_task is None
            and not self.pipeline
            and self._waiting is None
            and self._refusal_due is None
            and (cycle is None or cycle.response_complete)
            and not self.transport.is_closing()
        ):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # trailers --------------------------------------------------------------------------------------------------
    # llhttp hands a chunked body's trailer section (the fields after its last chunk) over as headers, after the
    # head, and uvicorn appends them to the request's headers: to the very list the app holds in its scope, after
    # it may have read it, where a later read finds them (the server reads the body's Content-Encoding once the
    # body is in, say). ASGI has no request trailers, and RFC 9110 6.5.1 forbids merging a trailer into the header
    # section without knowing the field allows it: they are dropped, as uvicorn's h11 protocol drops them. Nor
    # does any limit count them (the head's is done, and they are no body), so a client could send them without
    # end while httptools keeps the one arriving: the trailer section is held to the head's limit,
    # ``max_header_bytes``, its fields counted as they are handed over, the one still arriving at a read's end
    # estimated from the read's bytes (``_count_trailers``).
    def on_chunk_header(self) -> None:
        # the trailer section begins after the last chunk's size line; another chunk's data ends it (``on_body``).
        # What uvicorn's ``on_header`` appends from now on, to ``self.headers`` (the scope's list while the head
        # is read, a new one at the next request's start), is a trailer: it goes to the sink (an ``on_header`` of
        # this class's would cost every header of every head a call)
        self._in_trailers = True
        self._trailer_mark = True
        self._trailer_bytes = self._trailer_pending = 0
        sink = self._trailer_sink
        if sink is None:
            sink = self._trailer_sink = _TrailerSink(self._on_trailer)
        if self.headers is not sink:  # type: ignore[comparison-overlap]
            sink.head = self.headers
            self.headers = sink  # type: ignore[assignment]

    def _on_trailer(self, field: tuple[bytes, bytes]) -> None:
        name, value = field
        self._trailer_mark = True
        self._trailer_bytes += len(name) + len(value) + 4  # with its ": " and line end
        if self._trailer_bytes > self.max_header_bytes:
            self._refuse_trailers()

    def _count_trailers(self, data: bytes) -> None:
        """At the end of a read that leaves the trailer section still arriving: adds to the fields handed over the
        bytes of the one still arriving (httptools keeps it until the next begins or the section ends)."""
        if self._trailer_mark:
            # a field (or the section) began in this read: the one still arriving lies after the read's last line
            # end, not counting line ends at the read's very end (those of a field complete but not handed over)
            end = len(data)
            while end and data[end - 1] in b"\r\n":
                end -= 1
            self._trailer_pending = end - data.rfind(b"\n", 0, end) - 1
        else:
            self._trailer_pending += len(data)  # the whole read is the field still arriving
        if self._trailer_bytes + self._trailer_pending > self.max_header_bytes:
            self._refuse_trailers()

    def _refuse_trailers(self) -> None:
        """The trailer section of the request being read is over ``max_header_bytes``: nothing more is read from
        the connection. A ``431`` when its answer has not begun (its app reading the body is told the client is
        gone, and what it sends goes nowhere), after the answers before it if it waits its turn behind one (not
        run, then); when its answer is out or under way, the connection is closed (there is nothing to say)."""
        if self.transport.is_closing() or self._refusal_due is not None or self._trailers_refused:
            return  # the connection ends already, and nothing more of it is read
        cycle = self.cycle
        if self._discarding or cycle is None or cycle.response_started:
            self.transport.close()
            return
        self._trailers_refused = True
        detail = f"the request's trailer section is over {self.max_header_bytes} bytes"
        pipeline = self.pipeline
        for i, (waiting, _) in enumerate(pipeline):
            if waiting is cycle:
                # it waits its turn behind an answer still to come: its cycle, in that turn, gives the 431 instead
                # of running the app (and closes the connection: ``connection: close``)
                pipeline[i] = (cycle, _RefusalApp(431, detail))  # type: ignore[assignment]
                return
        cycle.disconnected = True
        cycle.message_event.set()
        scope = cycle.scope
        scope[REFUSED] = 431  # type: ignore[literal-required]
        # its app's access line says 431 (the middleware's, ``REFUSED``): this writes none, with the app's id
        self._write_refusal(431, "Request Header Fields Too Large", detail, scope, logged=True)  # type: ignore[arg-type]

    # the unread body's deadline -------------------------------------------------------------------------------
    # A request answered before its whole body is in (refused on its head, by the protocol or by its cycle; or
    # answered by the app without reading it) has its body dropped as it comes: uvicorn reads it only to find the
    # next request. Nothing reads it against the middleware's deadline, and each read of it stops the keep-alive
    # timer, so without one of its own a client could hold the connection for good by sending it slowly, or a byte
    # of it and nothing more. It gets ``body_timeout_s`` from the answer, as an accepted body gets from its head,
    # and, as nginx's ``lingering_timeout``, ``keep_alive_s`` (uvicorn's ``timeout_keep_alive``) between its reads
    # from the answer on: the connection closes at whichever comes first (the answer is out: there is nothing to
    # say), so a client silent after its answer is let go as soon as an idle one. The keep-alive timer is off
    # meanwhile, this one timer doing its work; the body's end stops it and arms that one again
    # (``on_message_complete``). A read of the body only notes its time (``_take``): the timer, when due, is armed
    # again for the later due time that read gave, as the head's timer is (one timer, no re-arming per read).
    def _await_unread_body(self) -> None:
        if self._body_timer is not None or self._refusal_due is not None or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        now = self.loop.time()
        self._body_deadline = now + self.body_timeout_s
        self._body_read_at = now
        self._arm_body_timer()

    def _arm_body_timer(self) -> None:
        self._body_due_at = due = min(self._body_deadline, self._body_read_at + self.timeout_keep_alive)
        # an empty context: armed by a cycle's answer, the timer would keep that request's context (its scope)
        # alive until it is due, cancelled or not
        self._body_timer = self.loop.call_at(due, self._body_due, context=contextvars.Context())

    def _end_body(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_due(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if min(self._body_deadline, self._body_read_at + self.timeout_keep_alive) > self._body_due_at:
            self._arm_body_timer()  # read from since it was armed, short of the deadline: due later
            return
        self.transport.close()

    # the head's timer ------------------------------------------------------------------------------------------
    # One timer per connection, not one per request: a head sets its deadline, and the timer, when it fires,
    # refuses a head past its deadline or waits for the deadline of the head now arriving (a keep-alive
    # connection's later request). A head that ends leaves the timer alone, so a request costs no timer.
    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_deadline = self.loop.time() + self.header_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_due)

    def _end_head(self) -> None:
        self._in_head = False

    def _head_due(self) -> None:
        if self._in_head and self._waiting is not None and self.loop.time() >= self._head_deadline:
            # what was read by the deadline waits its turn (pacing): taken now, out of turn, so that a head read
            # in time is not refused for the wait (the timer still set: a head it begins arms none)
            self.take_waiting()
        self._head_timer = None
        if not self._in_head:
            return  # no head arriving: the next one arms a timer
        if self.loop.time() < self._head_deadline:  # a later request's head: its own deadline
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_due)
            return
        self._refuse(408, "Request Timeout", f"the request head did not arrive within {self.header_timeout_s:g} s")

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._end_head()
        if self.transport.is_closing():
            return
        # the head being refused, as far as it was read (none on a connection that sent nothing), and how long
        # it took: for the access line (``_refusal_line``)
        scope = self._head_scope()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # answers to requests read before this head are still to come (pipelining): a client takes answers in
            # the order of its requests, so this one goes out after them (``on_response_complete``); nothing more
            # is read meanwhile
            self._refusal_due = (status, reason, detail)
            self._refused_scope = scope
            self.flow.pause_reading()
            return
        self._write_refusal(status, reason, detail, scope)

    def _head_scope(self) -> dict[str, Any]:
        """The scope of the head being refused, for its access line: the client, and the method and path once its
        request line is surely whole (a header read after it); else ``-`` for both. Its
        headers, for the request id, as far as read. A copy: the request's own, if any, is left as it was."""
        current: dict[str, Any] | None = self.scope  # type: ignore[assignment]  # None: no byte of a request yet
        scope: dict[str, Any] = {
            "client": self.client,
            "http_version": "1.1",
            "method": "-",
            "path": "-",
            "headers": [],
            ARRIVED: time.monotonic() - (self.header_timeout_s - (self._head_deadline - self.loop.time())),
        }
        if current is None or current.get(ARRIVED) is not None:
            return scope  # no head begun (a connection that sent nothing), or the scope is an earlier request's
        headers = current.get("headers") or []
        scope["headers"] = headers
        if headers:  # a header read (whole: httptools hands over none in part): the request line is whole
            try:
                scope["method"] = self.parser.get_method().decode("ascii")
                path = httptools.parse_url(self.url).path.decode("latin-1")
                # decoded, as uvicorn decodes every other request's path (``_answer_on_head`` too): the access
                # line redacts a key in the path it logs, and a percent-encoded one would pass it unseen
                scope["path"] = (unquote(path) if "%" in path else path)[:_LOGGED_PATH]
                scope["http_version"] = self.parser.get_http_version()
            except Exception:  # noqa: S110 (a request line httptools has not parsed: logged as ``-``)
                pass
            if self._forwarding is not None:  # the client a trusted proxy names, as for every other access line
                self._forwarding.apply(scope)
        return scope

    def _write_refusal(
        self, status: int, reason: str, detail: str, scope: dict[str, Any] | None, *, logged: bool = False
    ) -> None:
        """Writes a 408 or 431 and closes the connection; with its access line (``_refusal_line``), but where
        ``logged``: a request whose app is running, whose own line says it."""
        if scope is None:
            scope = self._head_scope()
        headers, body = _refusal(status, detail, _request_id(scope))
        head = b"".join((f"HTTP/1.1 {status} {reason}\r\n".encode(), *(b"%s: %s\r\n" % field for field in headers)))
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()
        if not logged:
            _refusal_line(scope, status, len(body))


def _not_run() -> None:
    """The ``on_response`` of a pipelined request's cycle that will not run: its connection is gone."""


#: the most characters of a refused head's path its access line shows (the head may be over the limit for it)
_LOGGED_PATH = 1024


def _request_id(scope: Scope) -> str:
    """The request id of a refused request, by the middleware's rules (``http/access.scan_headers``): the one
    its app's middleware gave it, if it ran; else the client's X-Request-ID if well-formed, else a new one. Kept in
    the scope, so the answer and its access line name the same."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if not isinstance(rid, str):
        rid = state["request_id"] = scan_headers(scope)[0]
    return rid


def _refusal_line(scope: Scope, status: int, sent: int) -> None:
    """The access line of a 408 or 431 the protocol answered (written or run by a cycle in place of the app),
    through the same ``access_line`` as every other answer's; its time from the head's start (``ARRIVED``)."""
    if ACCESS_LOG.isEnabledFor(logging.INFO):
        arrived = scope.get(ARRIVED)
        seconds = time.monotonic() - arrived if isinstance(arrived, float) else 0.0
        access_line(scope, _request_id(scope), status, sent, max(0.0, seconds))


def _refusal(status: int, detail: str, rid: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of the protocol's 408 or 431 (the connection closes after it), with the request id
    its access line names."""
    body = f"{detail} ({'header_timeout_s' if status == 408 else 'max_header_bytes'})\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", rid.encode("latin-1")),
        (b"connection", b"close"),
    ]
    return headers, body


class _TrailerSink:
    """Where uvicorn's ``on_header`` appends a chunked body's trailers (``on_chunk_header``): counted, dropped. Read,
    it is the head's headers (``head``), as uvicorn reads them while the body comes (``_get_upgrade``)."""

    __slots__ = ("append", "head")

    def __init__(self, append: Callable[[tuple[bytes, bytes]], None]) -> None:
        self.append = append
        self.head: list[tuple[bytes, bytes]] = []

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.head)


class _RefusalApp:
    """The protocol's 408 or 431 as an ASGI app, for a request cycle to send in its turn."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # no middleware runs in its place: the access line is written here (``_refusal_line``), as on the direct path
        headers, body = _refusal(self.status, self.detail, _request_id(scope))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        _refusal_line(scope, self.status, len(body))


def protocol_class(
    header_timeout_s: float,
    max_header_bytes: int,
    shedding: Shedder | None = None,
    pacing: Pacing | None = None,
    body_timeout_s: float = 60.0,
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to hand to ``uvicorn.Config(http=...)``; ``shedding``: refusals on the head under
    overload; ``pacing``: heads taken a slice at a time under a flood (``http/pacing.py``); ``body_timeout_s``:
    the time the body of a request answered before it is in has left (the middleware's for an accepted one)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": max_header_bytes,
            "shedding": shedding,
            "pacing": pacing,
            "body_timeout_s": body_timeout_s,
        },
    )
