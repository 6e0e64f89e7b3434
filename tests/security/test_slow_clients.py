"""The HTTP protocol in process, over a recording transport: the arrival stamp, one write per small answer, and
the answer to HEAD (tests/e2e/test_slow_clients.py drives the real server over sockets)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from helpers.wire import Connection, Wire, parse_answers
from modelapi.http.pacing import Paced, Pacing
from modelapi.security.slow_clients import ARRIVED, BODY_IN, IN_PROGRESS, LET_THROUGH, protocol_class


async def exchange(request: bytes) -> tuple[list[dict[str, Any]], Wire]:
    """Feed ``request`` to a fresh connection of the protocol; the scopes the app saw and the wire as it was
    before the connection closed."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        scope["seen_in_progress"] = len(scope[IN_PROGRESS]), asyncio.current_task() in scope[IN_PROGRESS]
        scope["body_in_at_start"] = BODY_IN in scope
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    config.load()
    cls = protocol_class(10.0, 65536)
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    wire = Wire()
    protocol.connection_made(wire)
    protocol.data_received(request)
    for _ in range(100):
        await asyncio.sleep(0)
    seen = Wire()
    seen.writes = list(wire.writes)
    protocol.connection_lost(None)
    return scopes, seen


def test_each_request_is_stamped_with_the_time_its_head_arrived() -> None:
    before = time.monotonic()
    scopes, _ = asyncio.run(exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
    after = time.monotonic()
    assert [s["path"] for s in scopes] == ["/a", "/b"]
    assert all(before <= s[ARRIVED] <= after for s in scopes)


def test_the_protocols_own_state_is_in_its_slots_leaving_uvicorns_in_the_instance_dict() -> None:
    # CPython reads instance attributes at fixed places only while a class's instances have at most 30 in their
    # dicts: an attribute this protocol adds without a slot would slow every attribute of the connection
    async def main() -> tuple[set[str], set[str]]:
        config = uvicorn.Config(lambda scope, receive, send: None, log_config=None, lifespan="off")
        config.load()
        plain = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        guarded = protocol_class(10.0, 65536)(config=config, server_state=ServerState(), app_state={})
        plain.connection_made(Wire())
        guarded.connection_made(Wire())
        guarded.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        plain.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.sleep(0)
        return set(vars(plain)), set(vars(guarded))

    plain, guarded = asyncio.run(main())
    assert guarded == plain and len(guarded) <= 30


def test_each_request_carries_the_servers_requests_in_progress_itself_included() -> None:
    scopes, _ = asyncio.run(exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert scopes[0]["seen_in_progress"] == (1, True)
    assert len(scopes[0][IN_PROGRESS]) == 0  # the request done, it is no longer counted


def test_a_request_whose_body_is_whole_when_it_starts_is_marked_and_one_still_arriving_is_not() -> None:
    post = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    scopes, _ = asyncio.run(exchange(post + b"abcd"))
    assert scopes[0]["body_in_at_start"] is True
    scopes, _ = asyncio.run(exchange(post + b"ab"))  # half the body: reading it may wait, so it keeps its timer
    assert scopes[0]["body_in_at_start"] is False and BODY_IN not in scopes[0]
    scopes, _ = asyncio.run(exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert scopes[0]["body_in_at_start"] is True


def test_a_small_answer_is_one_write_and_the_answer_to_head_is_not_held() -> None:
    _, wire = asyncio.run(exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(wire.writes) == 1 and wire.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert wire.writes[0].endswith(b"\r\n\r\n{}")
    _, wire = asyncio.run(exchange(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(wire.writes) == 1 and wire.writes[0].endswith(b"content-length: 2\r\n\r\n")


def _serving_into(served: list[str]) -> Any:
    """An app that answers every request ``200 {}`` and notes its path in ``served``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


class Refusing:
    """A shedder (``http/shedding.py``'s part) that refuses every POST to ``/refused`` on its head with a 503."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes, bytes]] = []
        self.arrived: list[float] = []
        self.scopes: list[dict[str, Any]] = []

    def app_for(self, method: bytes, url: bytes, app: Any, arrived: float) -> Any:
        self.asked.append((method, url))
        self.arrived.append(arrived)
        if method != b"POST" or not url.startswith(b"/refused"):
            return None
        return _Refusal(self)

    def refusing(self) -> bool:
        return True

    def stop(self) -> None:
        pass

    def closed(self, client: int) -> None:
        pass

    def refuse_read(
        self, data: bytes, arrived: float, client: int, https: bool, root_path: str, max_head: int
    ) -> bytes | None:
        return None  # every request through the parser and ``app_for`` (``http/shedding.py`` tests the other way)


class _Refusal:
    """``Refusing``'s refusal: answered on the head by the protocol, or sent by a request cycle."""

    def __init__(self, shedder: Refusing) -> None:
        self.shedder = shedder

    def answer(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.shedder.scopes.append(scope)
        return 503, [(b"content-length", b"0")], b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, headers, body = self.answer(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_a_request_refused_on_its_head_is_answered_by_the_shedders_app_and_the_next_by_the_servers() -> None:
    shedder = Refusing()
    served: list[str] = []
    app = _serving_into(served)

    async def main() -> list[int]:
        conn = Connection(app, shedder)
        post = b"POST /refused?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        answers = await conn.send(post + b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + post, 3)
        assert not conn.wire.closed
        conn.close()
        return [a.status for a in answers]

    assert asyncio.run(main()) == [503, 200, 503]
    assert served == ["/a"]
    assert shedder.asked == [(b"POST", b"/refused?x=1"), (b"GET", b"/a"), (b"POST", b"/refused?x=1")]
    assert all(s[ARRIVED] > 0 and s["path"] == "/refused" for s in shedder.scopes)  # stamped as any request
    # each head is asked about with its arrival, the stamp its scope carries (its wait to be read counts)
    assert [s[ARRIVED] for s in shedder.scopes] == [shedder.arrived[0], shedder.arrived[2]]


def test_a_whole_read_the_shedder_let_through_is_not_judged_again_on_its_head_and_the_next_head_is() -> None:
    """``refuse_read`` judged a request whole in one read and found room (``LET_THROUGH``): the app serves it and
    ``app_for`` is not asked about its head; a request after it, whose head comes in a read of its own, is."""

    class LettingThrough(Refusing):
        def refuse_read(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
            return LET_THROUGH if data.endswith(b"body") else None  # judged: room for it

    shedder = LettingThrough()
    served: list[str] = []
    app = _serving_into(served)

    async def main() -> list[int]:
        # as modelapi's server configures uvicorn: no access line of uvicorn's own (else the parser takes every read)
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        config.load()
        conn = Connection(app, shedder, config=config)
        head = b"POST /judged HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
        answers = await conn.send(head + b"body")
        assert shedder.asked == []
        conn.feed(head)  # the next request's head alone, then its body
        answers += await conn.send(b"abcd")
        assert shedder.asked == [(b"POST", b"/judged")]
        # a shedder wrong about a read of two requests: the first head's judgement is not the second's
        answers += await conn.send(head + b"abcd" + head + b"body", 2)
        conn.close()
        return [a.status for a in answers]

    assert asyncio.run(main()) == [200] * 4
    assert served == ["/judged"] * 4
    assert shedder.asked == [(b"POST", b"/judged")] * 2


def test_a_refusal_runs_behind_uvicorns_proxy_step_and_hands_on_to_the_servers_app_behind_it() -> None:
    """From a trusted proxy (127.0.0.1 by default), X-Forwarded-For and -Proto name the client and scheme for a
    refusal as for the app; a request the refusal hands on goes to the server's app, past that step once."""
    shedder = Refusing()
    given: list[Any] = []
    original = shedder.app_for

    def app_for(method: bytes, url: bytes, app: Any, arrived: float) -> Any:
        given.append(app)
        return original(method, url, app, arrived)

    shedder.app_for = app_for  # type: ignore[method-assign]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        conn = Connection(app, shedder)
        forwarded = b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n"
        (answer,) = await conn.send(b"POST /refused HTTP/1.1\r\nHost: x\r\n" + forwarded + b"Content-Length: 0\r\n\r\n")
        assert answer.status == 503
        conn.close()

    asyncio.run(main())
    (scope,) = shedder.scopes
    assert scope["client"] == ("10.1.2.3", 0) and scope["scheme"] == "https"
    assert given == [app]  # not uvicorn's wrapper: a request handed on passes its proxy step once


def test_a_refusal_that_fails_on_the_head_is_run_by_a_cycle_whose_failure_uvicorn_logs_and_answers_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Refusing):
        def app_for(self, method: bytes, url: bytes, app: Any, arrived: float) -> Any:
            refusal = super().app_for(method, url, app, arrived)
            if refusal is not None:
                refusal.answer = self.fail
            return refusal

        def fail(self, scope: dict[str, Any]) -> Any:
            raise RuntimeError("a bug in the refusal")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> list[int]:
        conn = Connection(app, Failing())
        post = b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        answers = await conn.send(post, 1)
        conn.close()
        return [a.status for a in answers]

    assert asyncio.run(main()) == [500]
    assert any(r.exc_info and "a bug in the refusal" in str(r.exc_info[1]) for r in caplog.records)


def _timed_connection(keep_alive_s: float, body_timeout_s: float = 60.0) -> Connection:
    """A connection refusing ``POST /refused`` on its head, to an app that answers ``/slow`` after 0.3 s, with
    uvicorn's keep-alive timeout ``keep_alive_s`` and the body's ``body_timeout_s``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    config = uvicorn.Config(app, log_config=None, lifespan="off", timeout_keep_alive=keep_alive_s)
    config.load()
    return Connection(app, Refusing(), config=config, body_timeout_s=body_timeout_s)


def test_a_connection_idle_after_a_refused_requests_body_is_closed_after_the_keep_alive_timeout() -> None:
    """The refusal goes out on the head; its body, read later, must not leave the connection idle with no timer."""

    async def main() -> None:
        conn = _timed_connection(0.1)
        (answer,) = await conn.send(b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        assert answer.status == 503
        conn.feed(b"bo")
        conn.feed(b"dy")  # the body's end, in a read of its own
        await asyncio.sleep(0.3)
        assert conn.wire.closed
        conn.close()

    asyncio.run(main())


def test_a_request_read_with_a_refused_one_is_not_cut_by_the_keep_alive_timeout_the_refusal_armed() -> None:
    async def main() -> None:
        conn = _timed_connection(0.1)
        refused = b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        answers = await conn.send(refused + b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 2)
        assert [a.status for a in answers] == [503, 200] and not conn.wire.closed
        conn.close()

    asyncio.run(main())


def test_a_refused_body_behind_an_answer_still_to_come_has_its_deadline_from_the_refusal() -> None:
    """Pipelined behind a request still being served, a request is refused once that one's answer is out (its
    cycle runs the refusal): its body's deadline counts from then, not from its head; then the connection closes."""

    async def main() -> None:
        conn = _timed_connection(5.0, body_timeout_s=0.5)
        refused = b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"
        started = time.monotonic()
        answers = await conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + refused, 2)
        assert [a.status for a in answers] == [200, 503]  # the refusal after /slow's 0.3 s
        await asyncio.sleep(max(0.0, started + 0.65 - time.monotonic()))
        assert not conn.wire.closed  # past 0.5 s from the head, short of 0.5 s from the refusal
        while not conn.wire.closed and time.monotonic() - started < 3.0:
            await asyncio.sleep(0.02)
        assert conn.wire.closed and len(conn.wire.writes) == 2
        conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("path", [b"/refused", b"/answered-early"])
def test_a_client_silent_after_its_answer_with_a_body_still_due_is_closed_after_the_keep_alive_timeout(
    path: bytes,
) -> None:
    """A POST answered on its head (refused; or by the app without reading the body, as a 401 is), whose promised
    body never comes: the connection is idle, and closes after keep_alive_s, not after the whole body's deadline."""

    async def main() -> None:
        conn = _timed_connection(0.1, body_timeout_s=2.0)
        started = time.monotonic()
        (answer,) = await conn.send(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        assert answer.status in (200, 503)
        while not conn.wire.closed and time.monotonic() - started < 3.0:
            await asyncio.sleep(0.01)
        assert conn.wire.closed and time.monotonic() - started < 1.0
        conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("path", [b"/refused", b"/answered-early"])
def test_a_body_still_due_that_keeps_coming_is_held_to_its_deadline_not_cut_by_the_keep_alive_timeout(
    path: bytes,
) -> None:
    """Bytes of the unread body, each within keep_alive_s of the last, keep the connection past keep_alive_s from
    the answer; the body's deadline (body_timeout_s from the answer) still closes it, the body not all in."""

    async def main() -> None:
        conn = _timed_connection(0.2, body_timeout_s=0.8)
        started = time.monotonic()
        (answer,) = await conn.send(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        assert answer.status in (200, 503)
        while time.monotonic() - started < 0.6:  # a byte every 0.05 s: never idle for keep_alive_s
            conn.feed(b"x")
            await asyncio.sleep(0.05)
        assert not conn.wire.closed  # three times keep_alive_s from the answer
        while not conn.wire.closed and time.monotonic() - started < 3.0:
            conn.feed(b"x")
            await asyncio.sleep(0.05)
        assert conn.wire.closed and time.monotonic() - started < 1.5
        conn.close()

    asyncio.run(main())


def test_refusals_wait_for_a_client_that_does_not_read_its_answers_and_reading_stops() -> None:
    """The transport's buffer over its high-water mark (``pause_writing``): answers on the head are not written
    past it, the connection stops reading, and once it drains they come, in order."""

    async def main() -> None:
        conn = _timed_connection(5.0)
        conn.protocol.pause_writing()
        refused = b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        try:
            conn.feed(refused * 20 + b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.05)
            assert not conn.wire.writes and not conn.wire.reading
        finally:
            conn.protocol.resume_writing()  # a cycle waiting to write would not end otherwise
        answers = await conn.answers(21)
        assert [a.status for a in answers] == [503] * 20 + [200] and conn.wire.reading
        conn.close()

    asyncio.run(main())


def test_a_head_that_begins_inside_a_read_counts_only_its_own_bytes_toward_the_limit() -> None:
    """A 70 kB body and the start of the next request's head in one read, the rest of that head in the next: the
    body's bytes are not the head's, so both requests are answered (not 431 for a head of a few dozen bytes)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        conn = Connection(app)
        big = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000
        small = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        conn.feed(big + small[:10])
        conn.feed(small[10:])
        answers = await conn.answers(2)
        assert [(a.status, a.body) for a in answers] == [(200, b"70000"), (200, b"2")]
        assert not conn.wire.closed
        conn.close()
        # a head over the limit that begins inside such a read is still refused at that read's end (the connection
        # closed at once, as for any head over the limit)
        conn = Connection(app)
        conn.feed(big + b"POST /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 66000)
        answers = await conn.answers(1)
        assert answers[-1].status == 431 and conn.wire.closed

    asyncio.run(main())


async def _echo_size(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the size of the request's body."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("framing", ["chunks", "extensions", "trailers"])
def test_a_chunked_bodys_framing_is_not_charged_to_the_head_pipelined_behind_it(framing: str) -> None:
    """A chunked body of many small chunks, its framing (the chunk-size lines, their extensions, the line ends, the
    trailers) near or over the head limit, and the start of the next request's head in one read, the rest of that
    head (under the limit, yet over it with the framing) in the next two: that framing is not the head's, so both
    requests are answered, not the second with 431."""

    chunk = b"1;name=value\r\nx\r\n" if framing == "extensions" else b"1\r\nx\r\n"
    end = b"0\r\n" + (b"x-trailer: " + b"t" * 20_000 + b"\r\n" if framing == "trailers" else b"") + b"\r\n"
    chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 10_000 + end
    second = b"POST /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        conn = Connection(_echo_size)
        conn.feed(chunked + second[:10])
        conn.feed(second[10:30_000])  # the head still arriving at this read's end: counted on
        conn.feed(second[30_000:])
        answers = await conn.answers(2)
        assert [(a.status, a.body) for a in answers] == [(200, b"10000"), (200, b"2")]
        assert not conn.wire.closed
        conn.close()
        # a head over the limit behind such a body is still refused at the end of the read it begins in
        conn = Connection(_echo_size)
        conn.feed(chunked + b"POST /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 66_000)
        answers = await conn.answers(2)
        assert [a.status for a in answers] == [200, 431] and conn.wire.closed

    asyncio.run(main())


@pytest.mark.parametrize("refused", ["431", "408"])
def test_a_head_refused_behind_a_request_in_progress_is_answered_after_it_in_order(
    refused: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client takes answers in the order of its requests: a 431 (a head over the limit) or a 408 (a head not
    done in time) for a request pipelined behind one still being served goes out after that one's answer, not
    before it (the client would read it as the first request's)."""
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        conn = Connection(app, header_timeout_s=0.05)
        first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        second = b"GET /b HTTP/1.1\r\nX-Request-ID: refused-b\r\nX-Big: " + (b"a" * 66000 if refused == "431" else b"a")
        conn.feed(first + second)
        await asyncio.sleep(0.2)  # past the head's timeout: the refusal is due, but the first answer is not out
        assert conn.wire.writes == [] and not conn.wire.closed
        conn.feed(b"more bytes of the refused head\r\n")  # not read: the connection ends after the answers
        release.set()
        answers = await conn.answers(2)
        assert [a.status for a in answers] == [200, int(refused)] and conn.wire.closed
        assert answers[1].headers["x-request-id"] == "refused-b"
        conn.close()

    with caplog.at_level(logging.INFO, logger="modelapi.access"):
        asyncio.run(main())
    # its access line, as every answer's: the client's request id, the method and path read before the refusal
    (record,) = [r for r in caplog.records if r.name == "modelapi.access"]
    assert (record.status, record.request_id, record.method, record.path) == (int(refused), "refused-b", "GET", "/b")  # type: ignore[attr-defined]


def test_a_refused_heads_access_line_has_its_path_decoded_and_a_key_in_it_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The path of a head refused 431 is logged as every other request's: decoded, so that a key in it, even
    percent-encoded, is redacted by the access line."""

    async def main() -> None:
        conn = Connection(_Reader(), max_header_bytes=4096)
        key = b"m%6B_0123abcd_" + b"0123456789abcdef" * 2
        conn.feed(b"GET /x/" + key + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        (answer,) = await conn.answers(1)
        assert answer.status == 431
        conn.close()

    with caplog.at_level(logging.INFO, logger="modelapi.access"):
        asyncio.run(main())
    (record,) = [r for r in caplog.records if r.name == "modelapi.access"]
    assert record.path == "/x/mk_0123abcd_<redacted>"  # type: ignore[attr-defined]


class _DeferEveryHead(Pacing):
    """Pacing that keeps every head but GET/HEAD waiting its turn, one taken a turn (a slice of 0)."""

    def __init__(self) -> None:
        super().__init__(slice_s=0.0)

    def later(self, connection: Paced, busy: bool = True) -> bool:
        return super().later(connection, True)


def test_a_head_over_the_limit_among_reads_kept_for_its_turn_is_not_run_behind_a_request_in_progress() -> None:
    """Reads kept while the connection waits its turn (pacing) are taken one by one: once one puts the head over
    the limit behind a request still in progress (its 431 due after that answer), the reads after it are not
    parsed, so the head they complete is not run before its 431 goes out."""
    release = asyncio.Event()
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        if scope["path"] == "/a":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        pacing = _DeferEveryHead()
        conn = Connection(app, pacing=pacing, max_header_bytes=1000)
        conn.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # taken at once, answered once released
        await asyncio.sleep(0)
        conn.feed(b"POST /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600)  # kept for its turn, as the reads after
        conn.feed(b"a" * 600)  # the head over the limit
        conn.feed(b"\r\nContent-Length: 0\r\n\r\n")  # and then complete
        for _ in range(10):
            await asyncio.sleep(0)
        assert not pacing.waiting and paths == ["/a"]
        release.set()
        answers = await conn.answers(2)
        assert [a.status for a in answers] == [200, 431] and conn.wire.closed
        assert paths == ["/a"]
        conn.close()

    asyncio.run(main())


def test_a_whole_head_refused_behind_an_answer_still_to_come_runs_nothing_after_it_nor_is_closed_as_idle() -> None:
    """A head over the limit that came whole in one read, behind a request still being served, with a request
    pipelined behind it in the same read: that request is not run (its answer would go out before the 431, and the
    client read it as the refused request's), and the connection is not closed under the first answer by the
    keep-alive timer, as if idle, while that answer is still to come."""
    release = asyncio.Event()
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        if scope["path"] == "/a":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        config = uvicorn.Config(app, log_config=None, lifespan="off", timeout_keep_alive=0.05)
        config.load()
        refused = b"GET /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
        for behind in (b"", b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"):
            release.clear()
            paths.clear()
            conn = Connection(app, config=config, max_header_bytes=1000)
            conn.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + refused + behind)
            await asyncio.sleep(0.2)  # past the keep-alive timeout, the first answer still to come
            assert not conn.wire.closed and conn.wire.writes == []
            release.set()
            answers = await conn.answers(2)
            assert [a.status for a in answers] == [200, 431] and conn.wire.closed
            assert paths == ["/a"]
            conn.close()

    asyncio.run(main())


def test_a_whole_head_over_the_limit_in_one_read_is_refused_and_its_request_not_run() -> None:
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        conn = Connection(app)
        head = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok"
        (answer,) = await conn.send(head)
        assert answer.status == 431 and b"max_header_bytes" in answer.body and conn.wire.closed
        await asyncio.sleep(0.01)
        assert started == []
        conn = Connection(app)  # one under the limit, in one read too, is served
        (answer,) = await conn.send(head.replace(b"a" * 70000, b"a" * 60000))
        assert answer.status == 200 and started == ["/a"]
        conn.close()

    asyncio.run(main())


CHUNKED = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


class _Reader:
    """An app that reads the whole body, then keeps the scope's headers as they are then, and answers its size
    (``answer_first``: its answer begun before it reads the body); ``events``: the messages it received."""

    def __init__(self, answer_first: bool = False) -> None:
        self.answer_first = answer_first
        self.headers: list[list[tuple[bytes, bytes]]] = []
        self.events: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        size, more = 0, True
        while more:
            message = await receive()
            self.events.append(message["type"])
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        self.headers.append(list(scope["headers"]))
        if not self.answer_first:
            body = str(size).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
            )
        else:
            body = b"{}"
        await send({"type": "http.response.body", "body": body})


def test_trailers_do_not_reach_the_scope_and_a_section_under_the_limit_passes() -> None:
    """The trailer section's fields are dropped, not appended to the headers the app holds (it reads them after the
    body here, as the server reads a body's Content-Encoding); under the limit, in pieces, behind tiny chunks
    whose framing is over the limit in the same read, the request is served and the connection kept."""

    async def main() -> None:
        app = _Reader()
        conn = Connection(app, max_header_bytes=4096)
        trailers = b"Content-Encoding: gzip\r\nAuthorization: Bearer x\r\nExpect: 100-continue\r\n"
        trailers += b"".join(b"x-t%d: %s\r\n" % (i, b"t" * 500) for i in range(6))  # about 3.1 kB in all
        conn.feed(CHUNKED + b"1\r\nx\r\n" * 2000 + b"0\r\n" + trailers[:1500])  # 12 kB of framing
        conn.feed(trailers[1500:2000])
        conn.feed(trailers[2000:] + b"\r\n")
        (answer,) = await conn.answers(1)
        assert (answer.status, answer.body) == (200, b"2000") and not conn.wire.closed
        assert app.headers == [[(b"host", b"x"), (b"transfer-encoding", b"chunked")]]
        (answer,) = await conn.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection goes on
        assert answer.status == 200
        conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("arrival", ["fields in one read", "a field a read", "one field without end"])
def test_a_trailer_section_over_the_limit_is_refused_431_and_the_connection_closed(arrival: str) -> None:
    """Trailers are header fields: their section is held to ``max_header_bytes``, as the head is, whether its
    fields come at once, one a read, or as one field that never ends (httptools keeps it whole until it ends,
    so it is counted on the raw bytes). The app reading the body is told the client is gone."""

    async def main() -> None:
        app = _Reader()
        conn = Connection(app, max_header_bytes=4096)
        conn.feed(CHUNKED + b"2\r\n{}\r\n0\r\n")
        fed = 0
        if arrival == "fields in one read":
            conn.feed(b"".join(b"x-t%d: %s\r\n" % (i, b"t" * 5000) for i in range(200)) + b"\r\n")
        else:
            conn.feed(b"x-big: " if arrival == "one field without end" else b"")
            for i in range(200):
                conn.feed(b"t" * 100 if arrival == "one field without end" else b"x-t%d: %s\r\n" % (i, b"t" * 90))
                fed += 100
                if conn.wire.closed:
                    break
            assert 4096 - 200 < fed < 4096 + 200  # refused as the limit is passed, not later
        (answer,) = await conn.answers(1)
        assert answer.status == 431 and b"trailer section" in answer.body and b"max_header_bytes" in answer.body
        assert conn.wire.closed
        for _ in range(10):
            await asyncio.sleep(0)
        assert app.events[-1] == "http.disconnect"  # nothing more of the body comes: the client is gone
        conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("answered", ["by the app", "on the head"])
def test_a_trailer_section_over_the_limit_after_the_answer_began_closes_the_connection(answered: str) -> None:
    """An answer begun (the app answers before it reads the body, or the request was refused on its head): no 431
    can follow it; the connection is closed."""

    async def main() -> None:
        app = _Reader(answer_first=True)
        conn = Connection(app, shedding=Refusing(), max_header_bytes=4096)
        conn.feed((CHUNKED if answered == "by the app" else CHUNKED.replace(b"/a", b"/refused")) + b"2\r\n{}\r\n")
        for _ in range(10):
            await asyncio.sleep(0)
        begun = b"".join(conn.wire.writes)  # the app's answer's head is held for its body (``HeadHolding``)
        assert begun.startswith(b"HTTP/1.1 503") if answered == "on the head" else begun == b""
        assert not conn.wire.closed
        conn.feed(b"0\r\n" + b"".join(b"x-t%d: %s\r\n" % (i, b"t" * 5000) for i in range(200)))
        written = b"".join(conn.wire.writes)  # (the held head goes out as the connection closes)
        assert conn.wire.closed and written.startswith(begun) and written.count(b"HTTP/1.1 ") == 1
        conn.close()

    asyncio.run(main())


def test_a_trailer_section_over_the_limit_behind_an_answer_still_to_come_is_refused_after_it_in_order() -> None:
    """A request waiting its turn behind one still being served: its 431 goes out after that answer, its app is
    not run, nor a request read behind it, and nothing more is read from the connection."""
    release = asyncio.Event()
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        if scope["path"] == "/a":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        conn = Connection(app, max_header_bytes=4096)
        trailers = b"".join(b"x-t%d: %s\r\n" % (i, b"t" * 500) for i in range(10)) + b"\r\n"
        refused = CHUNKED.replace(b"/a", b"/b") + b"2\r\n{}\r\n0\r\n" + trailers
        conn.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + refused + b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.feed(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0)
        assert conn.wire.writes == [] and not conn.wire.closed
        release.set()
        answers = await conn.answers(2)
        assert [a.status for a in answers] == [200, 431] and b"trailer section" in answers[1].body
        assert conn.wire.closed and paths == ["/a"]
        conn.close()

    asyncio.run(main())


#: what a connection exchanged before it closed: its bytes, whether it had its answer, and the error it was lost with
_EXCHANGES: dict[str, tuple[bytes, bool, Exception | None]] = {
    "nothing": (b"", False, None),
    "a request served": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", True, None),
    "a request refused on its head": (
        b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
        True,
        None,
    ),
    "trailers": (CHUNKED + b"1\r\nx\r\n0\r\nx-t: 1\r\n\r\n", True, None),
    # lost while its app reads the body, the trailer sink in place of the head's headers
    "a chunked body cut off": (CHUNKED + b"1\r\nx\r\n", False, None),
    # lost with a request waiting its turn behind one whose app is still at work: its cycle never runs
    "a request pipelined behind one in progress": (
        b"GET /held HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        False,
        None,
    ),
    # reset by the client while idle after its answer, the keep-alive timer armed
    "a request served, then a reset": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
        True,
        ConnectionResetError(),
    ),
}


@pytest.mark.parametrize("exchanged", list(_EXCHANGES))
def test_a_closed_connection_leaves_no_reference_cycle_behind(exchanged: str) -> None:
    """A connection's objects are freed by reference counting when it closes. With a cycle through each one, the
    connections of a flood, closed together, were left to a full collection that stopped the event loop for over
    100 ms (docs/overload-log.md)."""
    request, answered, lost_with = _EXCHANGES[exchanged]
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/held":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    # the server's own objects, made once for all its connections (its app, config and protocol class)
    config = uvicorn.Config(app, log_config=None, lifespan="off")
    config.load()
    cls = protocol_class(10.0, 65536, Refusing())
    state = ServerState()

    async def main() -> tuple[bool, int]:
        gc.collect()
        gc.disable()  # a collection while the connection lives could free a cycle before it is counted
        protocol = cls(config=config, server_state=state, app_state={})
        wire = Wire()
        protocol.connection_made(wire)
        if request:
            protocol.data_received(request)
            for _ in range(10):  # its app started
                await asyncio.sleep(0)
            while answered and not parse_answers(b"".join(wire.writes)):
                await asyncio.sleep(0.001)
        protocol.connection_lost(lost_with)
        release.set()  # the app held finishes
        freed = weakref.ref(protocol)
        del protocol, wire
        for _ in range(10):  # what the loop still holds of it (its request's task) is let go
            await asyncio.sleep(0)
        return freed() is None, gc.collect()

    try:
        freed, found = asyncio.run(main())
    finally:
        gc.enable()
    assert freed and found == 0
