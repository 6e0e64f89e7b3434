"""Slow, stalled and lying clients against the real server, over raw sockets: none of them holds a request open
past its timeout, and while they wait, others are served at once. Also the wire's other cases the HTTP protocol
(``security/slow_clients.py``) handles: ``Expect: 100-continue``, the answer to ``HEAD``, pipelined requests."""

from __future__ import annotations

import contextlib
import gzip
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from .server import RunningServer, serve

ROW = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--header-timeout", "1", "--body-timeout", "1", "--max-header-bytes", "4096", "--max-body-bytes", "1000")
    with serve(*args, tmp_dir=tmp_path_factory.mktemp("slow"), timeout=120) as running:
        yield running


def connect(server: RunningServer) -> socket.socket:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):  # a close with unread input resets
        while chunk := sock.recv(65536):
            data += chunk
    return data


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def request_id(answer: bytes) -> str:
    """The answer's ``X-Request-ID``."""
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-request-id":
            return value.strip().decode()
    raise AssertionError(answer)


def access_line(server: RunningServer, rid: str) -> str:
    """The access line naming request id ``rid`` (it is written after the answer goes)."""
    log = server.log_with(rid, timeout=3)
    lines = [line for line in log.splitlines() if rid in line and "modelapi.access" in line]
    assert len(lines) == 1, (rid, log[-3000:])
    return lines[0]


def test_silent_client_is_dropped(server: RunningServer) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        answer = read_all(sock)
    assert status(answer) == 408 and b"header_timeout_s" in answer
    assert 0.9 < time.monotonic() - started < 5
    # every answer has its access line: nothing of a request was read, so no method or path
    assert '"- - HTTP/1.1\\" 408' in access_line(server, request_id(answer))


def test_a_head_refused_408_has_its_access_line_with_the_clients_request_id(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + b"X-Request-ID: slow-head-408\r\nX-Slow: 1")
        answer = read_all(sock)
    assert status(answer) == 408 and request_id(answer) == "slow-head-408", answer
    assert '"POST /predict HTTP/1.1\\" 408' in access_line(server, "slow-head-408")


def test_trickled_headers_get_no_more_time(server: RunningServer) -> None:
    """slowloris: a header byte every 0.2 s never completes the head; the deadline is for the whole head."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(HEAD)
        with pytest.raises(OSError):  # the server closes the connection under the trickle
            for _ in range(50):
                sock.sendall(b"X")
                time.sleep(0.2)
        took = time.monotonic() - started
    assert took < 5


def test_stalled_body_gets_408(server: RunningServer) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + ROW[:10])
        answer = read_all(sock)
    assert status(answer) == 408, answer
    assert b"body_timeout_s" in answer and b"connection: close" in answer.lower()
    assert 0.9 < time.monotonic() - started < 5


def test_chunked_body_over_the_limit_gets_413(server: RunningServer) -> None:
    """No Content-Length to check up front: the body is counted as it arrives."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(10):
                sock.sendall(b"1f4\r\n" + b" " * 500 + b"\r\n")  # 500-byte chunks, 5000 bytes in all
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close before all is sent
        answer = read_all(sock)
    assert status(answer) == 413, answer
    assert b"max_body_bytes" in answer


def chunked(body: bytes, trailers: bytes) -> bytes:
    """A chunked request to ``/predict``: ``body`` in one chunk, then the trailer section ``trailers`` (its
    field lines)."""
    return HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailers)


def test_a_trailer_section_over_the_head_limit_gets_431(server: RunningServer) -> None:
    """Trailers are header fields after the body: they are held to the head's limit (4096 bytes here), and are no
    body, so the body's limit does not count them."""
    trailers = b"".join(b"x-trailer-%d: %s\r\n" % (i, b"t" * 100) for i in range(50))  # about 5.6 kB
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # the server may close before all is sent
            sock.sendall(chunked(ROW, trailers))
        answer = read_all(sock)
    assert status(answer) == 431 and b"trailer" in answer and b"max_header_bytes" in answer, answer
    line = '"POST /predict HTTP/1.1\\" 431'  # the access line says so, not 499 (the app saw the client gone)
    assert line in server.log_with(line)
    with connect(server) as sock:  # under the limit, the request is served and the connection kept
        sock.settimeout(5)
        sock.sendall(chunked(ROW, trailers[:3000].rpartition(b"\r\n")[0] + b"\r\n"))
        assert status(read_answer(sock)) == 200
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(ROW) + ROW)
        assert status(read_answer(sock)) == 200


def test_a_trailer_section_refused_in_the_read_of_its_head_names_one_request_id(server: RunningServer) -> None:
    """The whole request, its trailer section over the limit, in one read: the 431 is written before its app's
    task has run, and the access line (the middleware's, once that task runs) names the id the 431 sent."""
    trailers = b"".join(b"x-trailer-%d: %s\r\n" % (i, b"t" * 100) for i in range(50))  # about 5.6 kB
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # the server may close before all is sent
            sock.sendall(chunked(ROW, trailers).replace(b"/predict", b"/predict?turn=one-read", 1))
        answer = read_all(sock)
    assert status(answer) == 431, answer
    line = '"POST /predict?turn=one-read HTTP/1.1\\" 431'
    (logged,) = [entry for entry in server.log_with(line).splitlines() if line in entry]
    assert request_id(answer) in logged, (answer, logged)  # the line the app's middleware wrote names the sent id


def test_a_trailer_section_refused_behind_an_answer_still_to_come_has_its_access_line(server: RunningServer) -> None:
    trailers = b"".join(b"x-trailer-%d: %s\r\n" % (i, b"t" * 100) for i in range(50))  # about 5.6 kB
    first = HEAD.replace(b"/predict", b"/predict?turn=first") + b"Content-Length: %d\r\n\r\n" % len(ROW) + ROW
    refused = chunked(ROW, trailers).replace(b"/predict", b"/predict?turn=second", 1)
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # one read: the second request waits its turn behind the first
            sock.sendall(first + refused)
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 431 " in answer, answer
    assert '"POST /predict?turn=first HTTP/1.1\\" 200' in server.log_with("turn=first")
    line = '"POST /predict?turn=second HTTP/1.1\\" 431'
    assert line in access_line(server, request_id(answer[answer.index(b"HTTP/1.1 431 ") :]))


def test_a_trailer_is_not_merged_into_the_requests_headers(server: RunningServer) -> None:
    """A trailer ``Content-Encoding: gzip`` after a gzip body whose head names no content coding does not make the
    server inflate it (the server reads the coding once the body is in): trailers never reach the request's
    headers (RFC 9110 6.5.1). Named in the head, the same body is read."""
    body = gzip.compress(ROW)
    with connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(chunked(body, b"Content-Encoding: gzip\r\n"))
        answer = read_answer(sock)
        assert status(answer) == 400, answer  # the gzip bytes are no JSON document
        sock.sendall(chunked(body, b"").replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n", 1))
        answer = read_answer(sock)
        assert status(answer) == 200 and b'"prediction"' in answer, answer


def test_content_length_bounds_the_body(server: RunningServer) -> None:
    """Declared small, sent more: the body is what was declared; the rest is not read as body."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: 10\r\n\r\n" + b"[" * 5000)
        answer = read_all(sock)
    assert status(answer) == 400  # ten bytes of '[' are no JSON document; nothing past them was parsed as one


def test_oversized_head_gets_431(server: RunningServer) -> None:
    with connect(server) as sock:
        with contextlib.suppress(OSError):  # the server may close before all is sent
            sock.sendall(HEAD + b"X-Big: " + b"a" * 8000)
        answer = read_all(sock)
    assert status(answer) == 431 and b"max_header_bytes" in answer
    assert '"POST /predict HTTP/1.1\\" 431' in access_line(server, request_id(answer))
    with connect(server) as sock:  # the client's request id, read before the head went over the limit
        with contextlib.suppress(OSError):
            sock.sendall(HEAD + b"X-Request-ID: big-head-431\r\nX-Big: " + b"a" * 8000)
        answer = read_all(sock)
    assert status(answer) == 431 and request_id(answer) == "big-head-431", answer
    assert '"POST /predict HTTP/1.1\\" 431' in access_line(server, "big-head-431")


def test_stalled_clients_do_not_hold_the_server(server: RunningServer) -> None:
    stalled = [connect(server) for _ in range(30)]
    try:
        for i, sock in enumerate(stalled):
            sock.sendall(HEAD + (b"Content-Length: 100\r\n\r\n{" if i % 2 else b"X-Slow: 1"))
        started = time.monotonic()
        with httpx.Client(base_url=server.url) as client:
            for _ in range(5):
                r = client.post("/predict", content=ROW, headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
        assert time.monotonic() - started < 1.0 * 5
        answers = [read_all(sock) for sock in stalled]  # each is answered and dropped within its timeout
        assert {status(a) for a in answers} == {408}
    finally:
        for sock in stalled:
            sock.close()
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def read_answer(sock: socket.socket) -> bytes:
    """One answer with a ``content-length`` (its head and body), read from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_expect_100_continue_gets_its_go_ahead_before_the_body(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(ROW))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")  # sent at once, not held for the answer
        sock.sendall(ROW)
        answer = read_answer(sock)
    assert status(answer) == 200 and b'"prediction"' in answer


def test_the_answer_to_head_arrives_and_the_connection_stays_usable(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert status(head) == 200 and head.endswith(b"\r\n\r\n")
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(ROW) + ROW)
        assert status(read_answer(sock)) == 200


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    other = ROW.replace(b"5.1", b"7.7").replace(b"0.2", b"2.3")
    with connect(server) as sock:
        sock.sendall(b"".join(HEAD + b"Content-Length: %d\r\n\r\n" % len(r) + r for r in (ROW, other, ROW)))
        answers = [read_answer(sock) for _ in range(3)]
    assert [status(a) for a in answers] == [200, 200, 200]
    assert answers[0].split(b"\r\n\r\n")[1] == answers[2].split(b"\r\n\r\n")[1] != answers[1].split(b"\r\n\r\n")[1]


def test_a_websocket_upgrade_is_answered_not_held(server: RunningServer) -> None:
    """modelapi serves no websocket: the upgrade's refusal (a head and a body, written through the connection's
    head-holding transport) reaches the client at once."""
    with connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = read_all(sock)
    assert status(answer) in (403, 404), answer[:200]
