"""Refusals under overload answered in the HTTP protocol, before any of the app runs.

While the data plane's gate is refusing, the protocol (``security/slow_clients.py``) asks ``Shedding.app_for``
on each request's head (but one ``refuse_read`` already judged and let through, below) whether to refuse it
there: a ``POST`` to an inference route (its path matches one of
those routes' own patterns, as the router would match it; the literal end of the path, ``/infer``, ``/predict``,
``:predict``, is checked first, as ``http/fastpath.FastPath`` does) when ``DataPlane.shed`` says that every
version of every ready model would refuse a call now. A path no route takes goes to the app (its 404); a model
that does not exist is refused as any (the answer says nothing of which exist).

The refusal (``Refusal``, behind uvicorn's proxy step as the server's app is) answers the 503 the gate would
(the gate's detail, the schedule's ``Retry-After``, the route's error style, the request id and the standard
headers), counts it (``RequestRejected``, ``http/rejections.py``), remembers it for early retries
(``http/holds.py``) and writes the access line, all in one synchronous ``_answer`` (its bookkeeping, ``_give``,
shared with ``refuse_read``, below). Access lines of such refusals
are bounded (``RefusalLines``: ``access_log_refusals_per_s`` a second, per process); one past the bound writes
none, and the rejections warning counts it so. With no answer before it still
to come on the connection, the protocol writes it itself, as it reads the head (``Refusal.answer``): no request
cycle, no task. Behind an answer still to come (pipelined), uvicorn's cycle runs it as an ASGI app instead of
the server's, deciding again when it runs. Either way the body is dropped unread (it has ``body_timeout_s`` from
the refusal to come, then the connection closes: ``security/slow_clients.py``), and keep-alive and pipelining
work as for any answer.

Under a flood nearly every refused request comes whole in one read, its body in and nothing after it. Such a read
on an idle connection is refused before the parser sees it (``Shedding.refuse_read``): a strict pattern frames it
(``_whole``: what it does not take plainly, the parser takes), its routing is kept per target, and the same
decision and ``_give`` make the same bytes, in one write. Not where its access line is to be written: the
parser's path builds the scope that takes. What the next refusal would compute again is kept: each head's reading
by its bytes, each answer's body but for its request id (docs/overload.md, "What a refusal keeps from the last").
An early retry in such a read is held here rather than by the app
(``HeldRead``): no parser, task or middleware, only the hold's waiter and timer, and then the bytes the app's
held answer has; under a flood of clients that retry at once, a held retry through the app cost about as much
as half a served request (docs/overload.md, "An early retry held on the head").

A request the app would answer otherwise is handed to it: an early retry not in one whole read, or whose access
line is to be written (the app holds it until its ``Retry-After``, or until the server has room), a browser's
request with CORS on (the app's answer carries the
CORS headers), a body declared over ``max_body_bytes`` (413). Its ``Retry-After`` is booked only for a refusal
given, so a request handed on books no place in the schedule of returns. With tracing on nothing is bound here
(``http/app.py``): every request keeps its span.

Why: a refusal through the app costs about half of a served request's CPU (a task through nine layers of
middleware, routing and the admission), and under a flood that half is the server's least useful work; on the
head, the request cycle and task that ran the refusal were still about 40 % of its cost in process
(docs/overload.md). The
answer may come before authentication, and says nothing of which models exist: every model must be refusing;
its detail names the model only when the server knows that one alone and authentication is off (without a
key, nothing names a model: docs/security.md). Nothing is shed while the gate admits: the check costs one
attribute read then (docs/overload.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import re
import time
from collections.abc import Callable, Hashable, Sequence, Sized
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import jsonutil
from ..dataplane import SHED_DETAIL
from ..errors import EarlyRetry, Overloaded
from ..events import RequestRejected
from ..protocols import ErrorStyle, error_style_for
from ..security.slow_clients import ARRIVED, CONNECTION, GONE, IN_PROGRESS, LET_THROUGH, LetThrough
from .access import ACCESS_LOG, access_line, new_request_id, scan_headers, well_formed_id
from .holds import RetryHolds, connection
from .middleware import HSTS, STANDARD_RAW
from .rejections import REPORTER

if TYPE_CHECKING:
    from ..dataplane import DataPlane, Shed
    from ..gate import ModelGate

#: the title the app's refusal has (problem+json shows it): the gate's error's
_TITLE = Overloaded.title
_HSTS = HSTS.encode("latin-1")
_HSTS_LINE = b"strict-transport-security: " + _HSTS + b"\r\n"
_STANDARD = b"".join(name + b": " + value + b"\r\n" for name, value in STANDARD_RAW)
#: fields that change how a request is framed or answered (``_whole``): such a request goes to the parser
_FRAMED = (
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "connection",
    "proxy-connection",  # (llhttp reads it as ``Connection``)
    "x-forwarded-[!-~]*",
)


def _whole(cors: bool) -> re.Pattern[bytes]:
    """A request whole in one read, as ``Shedding.refuse_read`` takes one: ``POST``, its target (group 1),
    ``HTTP/1.1``, header fields, each a token, a colon and a value of visible characters, spaces and tabs, one of them
    a ``Content-Length`` of digits (group 2), none that frames the request otherwise or names a proxy's client
    (``_FRAMED``; with CORS on, no ``Origin``: the app answers a browser's request with its CORS headers), then the
    empty line. Stricter than the parser: anything else (obs-text, a folded line, a space before a colon, a bare
    LF) goes to the parser, which frames it or refuses it; what matches frames as the parser frames it."""
    names = "|".join((*_FRAMED, "origin") if cors else _FRAMED)
    field = rb"\r\n(?!(?i:%s):)[!#$%%&'*+.^_`|~0-9A-Za-z-]+:[\t !-~]*" % names.encode()
    length = rb"\r\n(?i:content-length):[ \t]*([0-9]{1,15})[ \t]*"
    return re.compile(rb"POST (/[!-~]*) HTTP/1\.1(?:%s)*%s(?:%s)*\r\n\r\n" % (field, length, field))


#: the most paths ``refuse_read`` keeps its routing of
_PATHS_KEPT = 256
#: the most heads ``refuse_read`` keeps its reading of (``Shedding._heads``), and the largest it keeps: at most
#: 512 KiB for all, where heads may be up to ``max_header_bytes`` (64 KiB by default) each
_HEADS_KEPT = 256
_HEAD_KEPT_BYTES = 2048
#: ``Shedding._framed``'s reading of a head the pattern does not take
_NOT_WHOLE = (-1, b"", "")
#: the most refusal bodies ``Shedding._give`` keeps, by style, detail and path (``Shedding._bodies``)
_BODIES_KEPT = 64


class RefusalLines:
    """The bound on access lines of refusals on the head: the first ``per_s`` refusals of each second write their
    line, the rest none (``admit``). Why: under a flood the line was the largest single cost of such a refusal
    (docs/overload.md), tens of thousands of lines a second that say the same thing, while the rejections
    warning counts every refusal by reason and model, those without a line too. The second is a window from the
    first refusal after the last one ended (no timer); the state is this process's, each worker its own."""

    __slots__ = ("_ends", "_written", "clock", "per_s")

    def __init__(self, per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.clock = clock
        self._ends = -math.inf
        self._written = 0

    def admit(self) -> bool:
        """Whether this refusal writes its access line: a clock read, two comparisons and a count a refusal."""
        now = self.clock()
        if now >= self._ends:
            self._ends = now + 1.0
            self._written = 0
        self._written += 1
        return self._written <= self.per_s

    def spent(self) -> bool:
        """Whether a refusal now would write no line: this second's are all written. Changes nothing (past the
        bound, ``admit`` would only count on, which changes no later answer). With a bound of 0, always: else the
        first refusal of each second went the parser's way for a line it would not write."""
        return self.per_s == 0 or (self._written >= self.per_s and self.clock() < self._ends)


class Shedding:
    """What the protocol asks on each head; ``bind`` gives it the data plane and the inference routes once the
    app is built (the protocol exists before the app: until then nothing is shed)."""

    def __init__(self) -> None:
        self._dataplane: DataPlane | None = None
        self._tails: tuple[bytes, ...] = ()
        #: each inference route's literal path end, its pattern (the router's), its protocol and its error style
        self._routes: tuple[tuple[str, re.Pattern[str], str, ErrorStyle], ...] = ()
        self._holds: RetryHolds | None = None
        #: the app's gate, whose kept places a connection's close frees (``places_in``)
        self._gate: ModelGate | None = None
        #: the app's held early retries, answered when the server stops (bound or not: not while tracing)
        self._stopping_holds: RetryHolds | None = None
        self._private = False
        self._cors = False
        self._max_body_bytes: int | None = None
        self._unnamed: frozenset[str] = frozenset()
        self._whole = _whole(False)
        #: ``refuse_read``'s routing, by the request's target: its protocol, error style, path and the answer's
        #: first header bytes; ``None`` for a target refused on no head
        self._paths: dict[bytes, tuple[str, ErrorStyle, str, bytes] | None] = {}
        #: ``refuse_read``'s reading of each head seen lately, by its bytes (``_framed``): under a flood a client
        #: sends the same head again and again, and the pattern and the id's search were a fifth of a refusal
        self._heads: dict[bytes, tuple[int, bytes, str]] = {}
        #: each refusal body given lately, by style, detail and path, as the bytes before its request id and after
        #: it: built and encoded once, not for each refusal (for a style that writes the id as a JSON string of its
        #: own, ``_spliced``)
        self._bodies: dict[tuple[ErrorStyle, str, str], tuple[bytes, bytes]] = {}
        self._spliced: dict[ErrorStyle, bool] = {}
        #: the bound on the refusals' access lines; ``None``: every refusal writes its line
        self.lines: RefusalLines | None = None

    def bind(
        self,
        dataplane: DataPlane,
        routes: Sequence[tuple[str, str, ErrorStyle]],
        holds: RetryHolds | None = None,
        *,
        private: bool = False,
        cors: bool = False,
        max_body_bytes: int | None = None,
        access_log_refusals_per_s: int | None = None,
    ) -> None:
        """``routes``: each inference route's path template, its protocol's name and its error style; a path is
        refused on its head only if it matches one of those templates as the router would (a path no route takes
        goes to the app, which answers 404). ``holds``: the early retries held until their ``Retry-After``: a
        refusal here is remembered there, and an early retry is not refused here but held: by ``refuse_read``
        when it came whole in one read, else by the app (``http/holds.py``). ``private``: authentication is on, so
        the answer names no model, not even the only one (without a key, nothing names a model: docs/security.md);
        the event and the log still do. Handed to the app, which answers them otherwise: a browser's request (one
        with an ``Origin``) when ``cors`` is on (with its CORS headers), and one whose declared body is over
        ``max_body_bytes`` (413, the connection closed rather than the body drained).
        ``access_log_refusals_per_s``: the refusals a second that write an access line (``RefusalLines``; 0: none;
        ``None``: every one)."""
        self._routes = tuple(
            (path[path.rfind("}") + 1 :], compile_path(path)[0], protocol, style) for path, protocol, style in routes
        )
        # the routes whose path names no model (``/predict``): the app's rejections reporter counts their refusals
        # under no model (it reads the path's), and so does a refusal here, or each would be a line a second
        self._unnamed = frozenset(path for path, _, _ in routes if "{" not in path)
        # a path that does not end as a route's does cannot match its pattern: the cheap check, made first
        self._tails = tuple({tail.encode() for tail, _, _, _ in self._routes if tail})
        self._holds = holds
        self._private = private
        self._cors = cors
        self._whole = _whole(cors)
        self._paths = {}
        self._heads = {}
        self._max_body_bytes = max_body_bytes
        self.lines = None if access_log_refusals_per_s is None else RefusalLines(access_log_refusals_per_s)
        self._dataplane = dataplane

    def stop_holds(self, holds: RetryHolds | None) -> None:
        """``holds``: the app's early retries held, which ``stop`` answers (tracing on, nothing else is bound)."""
        self._stopping_holds = holds

    def places_in(self, gate: ModelGate) -> None:
        """``gate``: the app's, which keeps a refused connection's place in its schedule of returns until the
        connection closes (``closed``); bound or not, as the app's own refusals keep places too."""
        self._gate = gate

    def closed(self, client: int) -> None:
        """The connection ``client`` (its ``CONNECTION``) closed: its place in a schedule of returns, if its last
        refusal kept one, is free (``ModelGate.release``)."""
        gate = self._gate
        if gate is not None and gate.places:
            gate.release(client)

    def stop(self) -> None:
        """The server is stopping: every early retry held is answered now (``RetryHolds.stop``)."""
        holds = self._stopping_holds
        if holds is not None and not holds.stopping:
            holds.stop()

    def refusing(self) -> bool:
        """Whether a request may be refused on its head now: the gate is refusing (``ModelGate.refusing``)."""
        dataplane = self._dataplane
        return dataplane is not None and dataplane.gate.refusing

    def app_for(self, method: bytes, url: bytes, app: ASGIApp, arrived: float) -> Refusal | None:
        """The refusal of this request, when it is to be refused on its head; else ``None``. ``app``: the server's,
        to which the refusal hands a request the app answers otherwise (an early retry, say); ``arrived``: the
        ``time.monotonic()`` its head arrived (``ARRIVED``), for its wait so far."""
        dataplane = self._dataplane
        if dataplane is None or not dataplane.gate.refusing or method != b"POST":
            return None
        if not url.split(b"?", 1)[0].endswith(self._tails):
            return None
        route = self._route(url)
        if route is None:
            return None
        shed = dataplane.shed(time.monotonic() - arrived)
        if shed is None:
            return None
        return Refusal(self, dataplane, route[0], route[1], app, shed)

    def _route(self, url: bytes) -> tuple[str, ErrorStyle, str] | None:
        """The protocol and error style of the inference route whose pattern the request's path matches, and that
        path as uvicorn puts it in the scope (and the router matches it): the URL's path, percent-decoded."""
        try:
            raw = httptools.parse_url(url).path
            path = "" if raw is None else raw.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None  # not a path any route takes
        if "%" in path:
            path = unquote(path)
        for tail, pattern, protocol, style in self._routes:
            if path.endswith(tail) and pattern.match(path):
                return protocol, style, path
        return None

    def refuse_read(
        self,
        data: bytes,
        arrived: float,
        client: int,
        https: bool,
        root_path: str,
        max_head: int,
        in_progress: Sized | None = None,
    ) -> bytes | HeldRead | LetThrough | None:
        """The refusal of a request that came whole in one read (``data``, its head and all its body, nothing
        after it), as the bytes that follow its status line and the server's default headers; everything else
        giving it does, done (``_give``), but its access line: one is given here only once this second's lines
        are all written (``RefusalLines``), or with access lines off. ``LET_THROUGH``, with nothing done, for a
        request it judged and found room for: the parser takes the read, and ``app_for`` is not asked again.
        ``None``, with nothing done, for anything else: the parser and ``app_for`` take the read as any.
        ``arrived``: when the read came
        (``time.monotonic()``); ``client``: the connection's id (``CONNECTION``); ``https``: the connection's
        scheme (a request with ``X-Forwarded-`` headers is the parser's: from a trusted proxy, they name another);
        ``max_head``: the head's size limit (a head over it is the parser's, which refuses it with a 431).
        An early retry (``RetryHolds.due``) is held instead, as the app would hold it: a ``HeldRead``, whose answer
        the protocol writes when the hold ends; with room for it now, ``None`` (not held: the app runs it);
        ``in_progress``: the server's requests in progress (``IN_PROGRESS``), for the hold's release. Why: under a
        flood most refusals are such reads, and the parser's callbacks, the scope and the general answer's steps
        were about half of a refusal's instructions (docs/overload.md)."""
        dataplane = self._dataplane
        if dataplane is None or not dataplane.gate.refusing:
            return None
        head_end = data.find(b"\r\n\r\n") + 4
        if head_end < 4 or head_end > max_head:
            return None  # no head's end in this read, or a head over the limit: the parser's
        head = data[:head_end]
        heads = self._heads
        framed = heads.get(head)
        if framed is None:
            framed = self._framed(head)
            if head_end <= _HEAD_KEPT_BYTES:  # (a large head is read each time: the kept ones stay small)
                if len(heads) >= _HEADS_KEPT:
                    heads.clear()  # heads that change with each request (ids, traces): the cache starts again
                heads[head] = framed
        declared, url, own_id = framed
        if declared < 0:
            return None  # not a head the pattern takes: the parser's
        if len(data) != head_end + declared:
            return None  # its body not all in this read, or a request after it: the parser frames them
        if self._max_body_bytes is not None and declared > self._max_body_bytes:
            return None  # the app's 413
        paths = self._paths
        if url in paths:
            route = paths[url]
        else:
            if len(paths) >= _PATHS_KEPT:
                paths.clear()  # a flood of paths: the cache starts again rather than grow
            route = paths[url] = self._routed(url)
        if route is None:
            return None
        protocol, style, routed, start = route
        path = root_path + routed
        logging_on = ACCESS_LOG.isEnabledFor(logging.INFO)
        lines = self.lines
        if logging_on and (lines is None or not lines.spent()):
            return None  # its access line is to be written: the parser builds the scope that takes
        holds = self._holds
        if holds is not None and holds.due(client, path):
            return self._hold(holds, own_id, client, path, style, start, https, in_progress)
        shed = dataplane.shed(time.monotonic() - arrived)
        if shed is None:
            return LET_THROUGH  # judged as ``app_for`` would judge its head: the parser's, not asked again
        rid = own_id or new_request_id()
        body, retry_after = self._give(shed, protocol, style, path, rid, client, logging_on)
        return b"%s%d\r\nretry-after: %s\r\nx-request-id: %s\r\n%s%s\r\n%s" % (
            start,
            len(body),
            retry_after,
            rid.encode("latin-1"),
            _STANDARD,
            _HSTS_LINE if https else b"",
            body,
        )

    def _framed(self, head: bytes) -> tuple[int, bytes, str]:
        """``refuse_read``'s reading of a head (``_whole``'s): its declared body length, its target, and its own
        well-formed ``X-Request-ID`` (``""`` for none: each answer gets a new one); ``_NOT_WHOLE`` for a head the
        pattern does not take, which the parser frames."""
        whole = self._whole.fullmatch(head)
        if whole is None:
            return _NOT_WHOLE
        return int(whole[2]), whole[1], _own_request_id(head)

    def _hold(
        self,
        holds: RetryHolds,
        own_id: str,
        client: int,
        path: str,
        style: ErrorStyle,
        start: bytes,
        https: bool,
        in_progress: Sized | None,
    ) -> HeldRead | None:
        """``refuse_read``'s early retry: held here, with no task, as the app would hold it (``http/holds.py``),
        its answer in the style the app's held answer takes (``error_style_for`` its path: it is answered before
        routing). ``None`` where the app would not hold it either (the server has room for it now, or it is
        barely early, ``EARLY_S``): the refusal it was told is forgotten, and the read is judged as any."""
        if holds.returning:
            holds.came(client)  # a client sent back from a hold, come back
        seconds = holds.hold(client, path)
        if seconds <= 0.0:
            return None  # not early enough to hold after all (``EARLY_S``), or the server stopping
        waiter = holds.hold_on_head(seconds, in_progress, client)
        if waiter is None:
            return None
        before_routing = error_style_for(path)  # (another than the route's under a root path, as the app's is)
        if before_routing is not style:
            style = before_routing
            start = b"content-type: " + style.media_type.encode("latin-1") + b"\r\ncontent-length: "
        return HeldRead(self, waiter, style, path, own_id or new_request_id(), start, https)

    def _routed(self, url: bytes) -> tuple[str, ErrorStyle, str, bytes] | None:
        """``refuse_read``'s routing of a request target: ``_route``'s, and the answer's first header bytes."""
        if b"?" in url or b"#" in url or not url.endswith(self._tails):
            return None  # a query string (the access line would show it) or fragment: the parser's
        route = self._route(url)
        if route is None:
            return None
        protocol, style, path = route
        start = b"content-type: " + style.media_type.encode("latin-1") + b"\r\ncontent-length: "
        return protocol, style, path, start

    def _give(
        self,
        shed: Shed,
        protocol: str,
        style: ErrorStyle,
        path: str,
        rid: str,
        client: Hashable | None,
        unlogged: bool,
        named: bool = True,
    ) -> tuple[bytes, bytes]:
        """What giving a refusal on the head does, whichever way it is written: its body and ``Retry-After`` (booked
        now that it is given), the refusal remembered for early retries, the event, the rejections reporter's
        count. ``unlogged``: past this second's bound of access lines; ``named``: ``client`` is the connection's id
        (``CONNECTION``), whose close the protocol reports (``closed``), so its place in the schedule is kept."""
        dataplane = self._dataplane
        assert dataplane is not None
        detail = SHED_DETAIL if self._private else shed.detail
        bodies, key = self._bodies, (style, detail, path)
        around = bodies.get(key)
        if around is not None:
            # (the id's characters are JSON's own: a well-formed client id or hex digits, ``well_formed_id``)
            body = around[0] + rid.encode("latin-1") + around[1]
        else:
            body = jsonutil.dumps(style.body(503, _TITLE, detail, path, rid))
            spliced = self._spliced.get(style)
            if spliced is None:
                spliced = self._spliced[style] = _writes_id_as_given(style)
            if spliced:
                # the id as a whole JSON string, found once (the same string elsewhere, a detail's, say: not kept)
                parts = body.split(b'"%s"' % rid.encode("latin-1"))
                if len(parts) == 2:
                    if len(bodies) >= _BODIES_KEPT:
                        bodies.clear()
                    bodies[key] = (parts[0] + b'"', b'"' + parts[1])
        retry_after = b"%d" % dataplane.gate.book(shed.schedule, shed.at_least, client if named else None)
        holds = self._holds
        if holds is not None:
            holds.refused(client, path, retry_after)
        events = dataplane.events
        if events.active:
            events.request_rejected(RequestRejected(shed.model, protocol, "overloaded", 503))
        model = None if path in self._unnamed else shed.model
        REPORTER.refused("overloaded", 503, model, shed.detail, unlogged=unlogged)
        return body, retry_after

    def _for_the_app(self, scope: Scope, declared: int | None) -> bool:
        """Whether the app answers this request otherwise than with the refusal: an early retry (it holds it), a
        browser's request with CORS on, a body declared over the limit."""
        holds = self._holds
        if holds is not None and holds.due(connection(scope), scope["path"]):
            return True  # a retry before its Retry-After: the app holds it until then (whole in one read: ``HeldRead``)
        if declared is not None and self._max_body_bytes is not None and declared > self._max_body_bytes:
            return True
        return self._cors and any(key == b"origin" for key, _ in scope["headers"])


class HeldRead:
    """An early retry the HTTP protocol holds itself (``Shedding.refuse_read``'s), as the app would hold it: when
    its hold ends it is answered ``503`` with ``Retry-After: 0`` and never run (``http/holds.py``), through the
    writer the protocol gives (``answer_to``): the bytes after the status line and the server's default headers.
    Counted as the app counts its held retries (reason ``early_retry``), with no access line: it is held here only
    once this second's refusal lines are written (``RefusalLines``), as a refusal in one read is."""

    __slots__ = ("_began", "_https", "_path", "_rid", "_shedding", "_start", "_style", "_waiter", "_write")

    def __init__(
        self,
        shedding: Shedding,
        waiter: asyncio.Future[bool],
        style: ErrorStyle,
        path: str,
        rid: str,
        start: bytes,
        https: bool,
    ) -> None:
        self._shedding = shedding
        self._waiter = waiter
        self._style = style
        self._path = path
        self._rid = rid
        self._start = start
        self._https = https
        self._began = time.monotonic()
        self._write: Callable[[bytes], None] | None = None
        waiter.add_done_callback(self._ended, context=contextvars.Context())

    def answer_to(self, write: Callable[[bytes], None]) -> None:
        """Who writes the answer, once the hold ends (a turn of the loop after it does, at the earliest)."""
        self._write = write

    def forget(self) -> None:
        """The connection is lost: no answer, nothing counted (as the app's held retry whose client left)."""
        self._write = None
        self._waiter.cancel()

    def end_now(self) -> None:
        """The server is stopping: answered now, not a turn later (the protocol closes the connection next)."""
        if not self._waiter.done():
            self._waiter.set_result(True)
        self._answer()

    def _ended(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.cancelled():
            self._answer()

    def _answer(self) -> None:
        write, self._write = self._write, None
        if write is None:
            return
        held = time.monotonic() - self._began
        detail = (
            f"sent before the Retry-After this connection was given for this path: held {held:.1f} s and not run;"
            " send it again now"
        )
        rid = self._rid
        body = jsonutil.dumps(self._style.body(503, EarlyRetry.title, detail, self._path, rid))
        # written before it is counted: whatever the counting might raise, the connection has its answer
        write(
            b"%s%d\r\nretry-after: 0\r\nx-request-id: %s\r\n%s%s\r\n%s"
            % (self._start, len(body), rid.encode("latin-1"), _STANDARD, _HSTS_LINE if self._https else b"", body)
        )
        dataplane = self._shedding._dataplane
        if dataplane is not None and dataplane.events.active:
            dataplane.events.request_rejected(RequestRejected(None, "http", "early_retry", 503))
        REPORTER.refused("early_retry", 503, None, detail, unlogged=ACCESS_LOG.isEnabledFor(logging.INFO))


def _writes_id_as_given(style: ErrorStyle) -> bool:
    """Whether ``style``'s error body holds the request id once, as a JSON string of its own, and depends on it no
    further: then a body kept split around that string (``Shedding._bodies``) is the body for any id."""
    ids = ("aZ09._:-" * 4, "Zz-9" * 8)  # every character an id may hold (``well_formed_id``), mixed case
    bodies = [jsonutil.dumps(style.body(503, _TITLE, "detail", "/path", i)) for i in ids]
    parts = bodies[0].split(b'"%s"' % ids[0].encode())
    return len(parts) == 2 and bodies[1] == b'%s"%s"%s' % (parts[0], ids[1].encode(), parts[1])


def _own_request_id(head: bytes) -> str:
    """The request's own ``X-Request-ID`` from its head, if well formed; else ``""`` (the answer makes a new one)."""
    lowered = head.lower()
    at = lowered.find(b"\r\nx-request-id:")
    if at >= 0:
        text = head[at + 15 : lowered.find(b"\r\n", at + 15)].strip(b" \t").decode("latin-1")
        if well_formed_id(text):
            return text
    return ""


class Refusal:
    """A request to be refused on its head (``Shedding.app_for``'s). ``answer`` gives the refusal at once, for the
    protocol to write itself; called as an ASGI app (by a request cycle, for a request pipelined behind another)
    it sends it, or hands the request on to ``app``. Both are the one ``_answer``."""

    __slots__ = ("_app", "_dataplane", "_protocol", "_shed", "_shedding", "_style")

    def __init__(
        self, shedding: Shedding, dataplane: DataPlane, protocol: str, style: ErrorStyle, app: ASGIApp, shed: Shed
    ) -> None:
        self._shedding = shedding
        self._dataplane = dataplane
        self._protocol = protocol
        self._style = style
        self._app = app
        self._shed: Shed | None = shed  # decided on the head: good for an answer given at once

    def answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The refusal given now, on the head, as the status, headers and body to write (everything else it does
        done: see ``_answer``); ``None``, with nothing done, for a request the app answers otherwise. ``scope``:
        the request's, behind uvicorn's proxy step."""
        shed, self._shed = self._shed, None
        return self._answer(scope, shed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # decided again now that it runs: a pipelined request runs only once the answers before it are out
        answer = self._answer(scope, None)
        if answer is None:
            await self._app(scope, receive, send)
            return
        status, headers, body = answer
        if (b"expect", b"100-continue") in ((n, v.lower()) for n, v in scope["headers"]):
            # as the refusal written on the head (``slow_clients``): a client waiting for ``100 Continue``, which
            # never comes, may send its body or not, so the connection's next bytes could be either: it is closed
            headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        holds = self._shedding._holds
        if holds is not None and (holds.held or holds.settling):
            holds.ended(scope.get(IN_PROGRESS))  # a request cycle's task ends: as the middleware's (http/holds.py)

    def _answer(self, scope: Scope, now: Shed | None) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The 503 the gate would give, and what giving it does: its ``Retry-After`` booked, the refusal remembered
        for early retries, the event, the rejections reporter, the access line (written as the answer is: nothing
        waits between the two; none past this second's bound, ``RefusalLines``). ``None``, with nothing done, for a
        request the app answers otherwise, or when no model refuses any more. ``now``: the head's decision, if just
        made; else decided here."""
        shedding = self._shedding
        dataplane = self._dataplane
        rid, declared = scan_headers(scope)
        if shedding._for_the_app(scope, declared):
            return None
        if now is None:
            arrived = scope.get(ARRIVED)
            now = dataplane.shed(time.monotonic() - arrived if isinstance(arrived, float) else 0.0)
            if now is None:
                return None
        path: str = scope["path"]
        logging_on = ACCESS_LOG.isEnabledFor(logging.INFO)
        lines = shedding.lines
        # past this second's bound, no line: the reporter counts that, so its warning says lines were left out
        unlogged = logging_on and lines is not None and not lines.admit()
        client = connection(scope)
        # a connection already closed (a pipelined request run after its client left) is not followed: its close
        # was reported before this place would be kept
        gone = scope.get(GONE)
        named = scope.get(CONNECTION) is not None and (gone is None or not gone())
        body, retry_after = shedding._give(now, self._protocol, self._style, path, rid, client, unlogged, named)
        headers = [
            (b"content-type", self._style.media_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"retry-after", retry_after),
            (b"x-request-id", rid.encode("latin-1")),
            *STANDARD_RAW,
        ]
        if scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", _HSTS))
        if logging_on and not unlogged:
            arrived = scope.get(ARRIVED)
            seconds = time.monotonic() - arrived if isinstance(arrived, float) else 0.0
            access_line(scope, rid, 503, len(body), seconds)
        return 503, headers, body
