"""The operations port's listener (``http/ops.py``) over a real socket: the health answers it is given, a head
that arrives in pieces, what it refuses, and a head over its limit."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette

from modelapi.http import ops
from modelapi.http.lifecycle import Lifecycle
from modelapi.server import _Server


def _health(path: str) -> tuple[int, dict[str, bool]] | None:
    return {"/v2/health/live": (200, {"live": True}), "/v2/health/ready": (503, {"ready": False})}.get(path)


async def _exchange(*pieces: bytes) -> bytes:
    """What the listener answers to ``pieces``, sent one at a time, until it closes the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = await ops.serve(listener, _health)
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer
    finally:
        server.close()
        listener.close()


def _run(*pieces: bytes) -> bytes:
    return asyncio.run(_exchange(*pieces))


def test_the_health_answers_it_is_given() -> None:
    answer = _run(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-type: application/json" in head and b"connection: close" in head
    assert body == b'{"ready":false}'
    assert _run(b"GET /v2/health/live?verbose=1 HTTP/1.1\r\n\r\n").endswith(b'\r\n\r\n{"live":true}')
    assert _run(b"HEAD /v2/health/live HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")  # no body


def test_a_head_in_pieces_is_answered_once_whole() -> None:
    answer = _run(b"GET /v2/hea", b"lth/live HTTP/1.1\r\nhost: x\r", b"\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}", b"404 Not Found"),
        (b"GET /predict HTTP/1.1\r\n\r\n", b"404 Not Found"),
        (b"GET /v2/health/live/ HTTP/1.1\r\n\r\n", b"404 Not Found"),
        (b"POST /v2/health/live HTTP/1.1\r\ncontent-length: 0\r\n\r\n", b"405 Method Not Allowed"),
    ],
)
def test_nothing_else_is_served(request_: bytes, status: bytes) -> None:
    assert _run(request_).startswith(b"HTTP/1.1 " + status + b"\r\n")


def test_a_head_over_the_limit_is_closed_unanswered() -> None:
    assert _run(b"GET /v2/health/live HTTP/1.1\r\nx: " + b"a" * (ops.MAX_HEAD_BYTES + 1)) == b""


def test_a_probe_accepted_before_the_server_stops_is_answered_before_it_exits() -> None:
    """With several workers the operations port's socket is shared: a worker whose drain has ended closes its
    listener and its loop ends, while the others still serve. A probe's connection that worker accepted just before
    (its head not yet read) must still be answered, not dropped as the process exits."""

    main_sock, ops_sock = socket.socket(), socket.socket()
    for sock in (main_sock, ops_sock):
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
    answers: list[bytes] = []

    def probe() -> None:
        with socket.create_connection(ops_sock.getsockname(), timeout=5) as client:
            time.sleep(0.3)  # the head comes once the listener has closed
            client.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            try:
                answers.append(client.recv(4096))
            except OSError as exc:
                answers.append(repr(exc).encode())

    async def main() -> threading.Thread:
        config = uvicorn.Config(Starlette(), lifespan="off", log_config=None)
        config.load()
        server = _Server(config, Lifecycle(Starlette), ops_socket=ops_sock)
        server.lifespan = config.lifespan_class(config)  # as uvicorn's serve sets it
        await server.startup(sockets=[main_sock])
        client = threading.Thread(target=probe)
        client.start()
        await asyncio.sleep(0.1)  # its connection is accepted
        await server.shutdown(sockets=[main_sock])  # the listener closes at the drain's end, after 0.1 s
        return client

    client = asyncio.run(main())  # the loop ends with the server, as the worker's does
    client.join(10)
    ops_sock.close()
    assert answers and answers[0].startswith(b"HTTP/1.1 200 OK\r\n"), answers
