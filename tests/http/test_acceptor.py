"""The main port's listener (``http/acceptor.py``), in process over real sockets: the server (``server._Server``, as
a worker runs it) on uvloop and on asyncio's loop.

A flood of new connections is answered within a few turns of a busy loop (uvloop's own listener takes one
connection a turn); TLS; TCP_NODELAY; a turn takes a batch at most; shutdown stops accepting and keeps what it
accepted; out of file descriptors it pauses instead of spinning, and an aborted connection does not stop it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from helpers.tls import make_certs
from modelapi.http import acceptor
from modelapi.http.lifecycle import Lifecycle
from modelapi.server import _Server, bind

LOOPS = pytest.mark.parametrize(
    "loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"]
)
GET = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


async def _started(sock: socket.socket, **options: Any) -> _Server:
    """``_Server`` listening on ``sock``, as ``serve_socket`` starts it (its app without the lifecycle's start)."""
    config = uvicorn.Config(_app(), lifespan="off", log_config=None, **options)
    config.load()
    server = _Server(config, Lifecycle(_app))
    server.lifespan = config.lifespan_class(config)  # as uvicorn's serve sets it
    await server.startup(sockets=[sock])
    return server


def _ask(address: tuple[str, int], context: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection(address, timeout=20) as raw:
        conn = raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall(GET)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def _busy(loop: asyncio.AbstractEventLoop, turn_s: float) -> Callable[[], None]:
    """Make every turn of ``loop`` last ``turn_s`` at least (a callback that blocks, then schedules itself for the
    next turn), as a flood's reads, heads and answers do; returns what stops it."""
    stopped = False

    def block() -> None:
        if not stopped:
            time.sleep(turn_s)
            loop.call_soon(block)

    def stop() -> None:
        nonlocal stopped
        stopped = True

    loop.call_soon(block)
    return stop


@LOOPS
def test_a_flood_of_new_connections_is_answered_within_a_few_turns_of_a_busy_loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """200 connections opened at once while every turn of the loop takes 20 ms: each is answered within 1.5 s.
    A listener that accepts one connection a turn (uvloop's own, since libuv 1.45) takes 200 turns, 4 s, to
    accept the last: a new client waits in the kernel's accept queue, unseen, however fast the server could
    answer it."""
    flood = 200
    sock = bind("127.0.0.1", 0)
    address = sock.getsockname()

    async def main() -> list[tuple[bytes, float]]:
        server = await _started(sock)
        stop = _busy(asyncio.get_running_loop(), 0.02)
        try:

            def timed() -> tuple[bytes, float]:
                t0 = time.monotonic()
                return _ask(address), time.monotonic() - t0

            with concurrent.futures.ThreadPoolExecutor(flood) as pool:
                asks = [pool.submit(timed) for _ in range(flood)]
                return list(await asyncio.gather(*(asyncio.wrap_future(ask) for ask in asks)))
        finally:
            stop()
            await server.shutdown(sockets=[sock])

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        answers = runner.run(main())
    assert all(data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"hello") for data, _ in answers)
    assert max(seconds for _, seconds in answers) < 1.5, sorted(seconds for _, seconds in answers)[-5:]


@LOOPS
def test_tls_is_served_through_the_listener(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    sock = bind("127.0.0.1", 0)

    async def main() -> list[bytes]:
        server = await _started(sock, ssl_certfile=str(certs.cert), ssl_keyfile=str(certs.key))
        try:
            context = certs.client_context()
            asks = [asyncio.to_thread(_ask, sock.getsockname(), context) for _ in range(3)]
            # a client that is not speaking TLS is dropped, and the listener goes on
            plain = await asyncio.to_thread(_ask, sock.getsockname())
            return [*await asyncio.gather(*asks), plain]
        finally:
            await server.shutdown(sockets=[sock])

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        *tls_answers, plain = runner.run(main())
    assert all(data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"hello") for data in tls_answers)
    assert not plain.startswith(b"HTTP/1.1 200")


@LOOPS
def test_accepted_connections_have_nagle_off(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """As uvicorn's listener gives them: without TCP_NODELAY a keep-alive response's second write waits ~40 ms for
    the client's delayed ACK."""
    sock = bind("127.0.0.1", 0)
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        listener = acceptor.Acceptor(sock, Probe)
        try:
            with socket.create_connection(sock.getsockname(), timeout=5):
                for _ in range(200):
                    if seen:
                        break
                    await asyncio.sleep(0.01)
        finally:
            listener.close()
            await listener.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert seen and seen[0] != 0


@contextlib.contextmanager
def _queued(address: tuple[str, int], n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections the kernel has completed, waiting in the listener's accept queue."""
    clients = [socket.create_connection(address, timeout=5) for _ in range(n)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


@LOOPS
def test_a_turn_accepts_a_batch_at_most_and_the_next_turns_the_rest(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """So that one turn of the loop is not filled with connections' set-up."""
    sock = bind("127.0.0.1", 0)
    made: list[int] = []
    turn = 0

    class Counted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(turn)

    async def main() -> None:
        nonlocal turn
        loop = asyncio.get_running_loop()
        with _queued(sock.getsockname(), acceptor.BATCH + 10):
            listener = acceptor.Acceptor(sock, Counted)
            while len(made) < acceptor.BATCH + 10 and turn < 100:
                await asyncio.sleep(0)  # one turn of the loop
                turn += 1
            await asyncio.sleep(0.05)
            listener.close()
            await listener.wait_closed()
        del loop

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert len(made) == acceptor.BATCH + 10
    first = made[0]
    assert made.count(first) == acceptor.BATCH, made  # the first batch's connection_made calls, in one turn
    assert max(made) - first <= 3, made  # the rest within a few turns after it


@LOOPS
def test_close_stops_accepting_and_keeps_the_accepted_connections(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """uvicorn's shutdown closes the listener first (``close``, then ``wait_closed`` once the connections are done):
    a new connection is refused from then on, while one accepted before is still answered."""
    sock = bind("127.0.0.1", 0)
    address = sock.getsockname()

    async def main() -> tuple[bytes, BaseException | None]:
        server = await _started(sock)
        early = socket.create_connection(address, timeout=5)
        await asyncio.sleep(0.05)  # accepted
        (listener,) = server.servers
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), 1)
        refused: BaseException | None = None
        try:
            socket.create_connection(address, timeout=1).close()
        except OSError as exc:
            refused = exc
        early.sendall(GET)
        answer = await asyncio.to_thread(early.recv, 65536)
        early.close()
        await server.shutdown(sockets=[sock])
        return answer, refused

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        answer, refused = runner.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert isinstance(refused, ConnectionRefusedError)
    assert sock.fileno() == -1  # closed


class _Failing(socket.socket):
    """A listening socket whose ``accept`` raises the errors queued in ``errors`` before accepting again."""

    errors: list[int]
    calls = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls += 1
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        return super().accept()


def _failing(errors: list[int]) -> _Failing:
    plain = bind("127.0.0.1", 0)
    sock = _Failing(plain.family, plain.type, plain.proto, fileno=plain.detach())
    sock.errors = errors
    return sock


@LOOPS
def test_out_of_file_descriptors_it_pauses_logs_once_and_resumes(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE leaves the connection in the queue and the socket readable: accepting again at once would spin the
    loop. It pauses, says so once, and takes the connection when a descriptor is free again."""
    monkeypatch.setattr(acceptor, "PAUSE_S", 0.1)
    sock = _failing([errno.EMFILE] * 3)
    made: list[float] = []

    class Counted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(time.monotonic())

    async def main() -> float:
        with _queued(sock.getsockname(), 1):
            t0 = time.monotonic()
            listener = acceptor.Acceptor(sock, Counted)
            while not made and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            listener.close()
        return t0

    with caplog.at_level(logging.DEBUG, logger="modelapi"), asyncio.Runner(loop_factory=loop_factory) as runner:
        t0 = runner.run(main())
    assert len(made) == 1 and made[0] - t0 >= 0.3  # after three pauses
    assert sock.calls == 5  # one try per pause (not a spin), the accept, and the try that found the queue empty
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Too many open files" in errors[0].getMessage()
    assert any("accepting connections again" in r.getMessage() for r in caplog.records)


@LOOPS
def test_a_connection_aborted_before_it_was_accepted_is_skipped(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    sock = _failing([errno.ECONNABORTED])

    async def main() -> bytes:
        server = await _started(sock)
        try:
            return await asyncio.to_thread(_ask, sock.getsockname())
        finally:
            await server.shutdown(sockets=[sock])

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        answer = runner.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
