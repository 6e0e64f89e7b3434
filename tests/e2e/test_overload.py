"""Overload against the real server: refusals on the head, before the body, and liveness that stays fast.

A deliberately slow model (``toymodels:Sleepy``) with ``--max-inflight 2`` is kept full; every further request
must be refused at once with 503 and ``Retry-After`` (the V2 route's ``{"error": ...}``), also one whose huge
body is still arriving, while ``/v2/health/live`` keeps answering quickly. Once the app has refused one, the
HTTP protocol refuses the next on their heads (http/shedding.py): a flood on every inference protocol gets the
same answers, and a kept connection is served once the flood is over.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from helpers.metrics import matching, parse
from helpers.wire import Answer, parse_answers

from .server import RunningServer, serve

SLEEPY = "toymodels:Sleepy"
INFER = "/v2/models/sleepy/infer"
#: the server's ``--body-timeout``
BODY_TIMEOUT_S = 2.0


def _body(seconds: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [seconds]}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = (SLEEPY, "--max-inflight", "2", "--no-batching", "--body-timeout", str(BODY_TIMEOUT_S))
    with serve(*args, tmp_dir=tmp_path_factory.mktemp("overload"), timeout=120) as running:
        yield running


def _occupy(server: RunningServer, seconds: float, n: int) -> list[threading.Thread]:
    """``n`` requests that hold the model's slots for ``seconds``; returns once they are in flight."""

    def one() -> None:
        httpx.post(server.url + INFER, content=_body(seconds), headers={"content-type": "application/json"}, timeout=30)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    # a probe sent before the slow requests are all admitted would take a slot itself and wait behind them, so
    # first wait for the in-flight gauge (this one worker renders it current) to show them all
    deadline = time.monotonic() + 10
    gauge = re.compile(r'^modelapi_requests_in_flight\{[^}]*model="sleepy"[^}]*\} (\S+)$', re.M)
    while time.monotonic() < deadline:
        found = gauge.findall(httpx.get(server.url + "/metrics").text)
        if found and sum(float(v) for v in found) >= n:
            break
        time.sleep(0.02)
    r = httpx.post(server.url + INFER, content=_body(0), headers={"content-type": "application/json"})
    if r.status_code == 503:
        return threads
    raise AssertionError(f"the slow requests never filled the model's slots: {r.status_code} {r.text}")


def test_a_refusal_comes_before_the_body_is_read(server: RunningServer) -> None:
    """The head says 30 MB are coming (under max_body_bytes); the 503 arrives after only a kilobyte was sent."""
    threads = _occupy(server, 2.0, 2)
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = (
            f"POST {INFER} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {30_000_000}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"inputs": [' + b" " * 1000)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"retry-after: 1" in headers.lower()
    assert "max_inflight" in orjson.loads(payload)["error"]
    assert waited < 1.5  # answered while the slow requests still run, not after the 30 MB
    for t in threads:
        t.join(30)


def test_a_refused_requests_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_timeout(server: RunningServer) -> None:
    """The body of a refused request is dropped as it comes, and has ``--body-timeout`` from the refusal: a client
    that sends it a byte at a time does not hold the connection longer; then it is closed, nothing more said."""
    threads = _occupy(server, 1.0, 2)
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = (
            f"POST {INFER} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode())
        (answer,) = _answers(sock, 1)
        refused_at = time.monotonic()
        assert answer.status == 503 and "connection" not in answer.headers
        after = b""
        sock.settimeout(0.1)
        while time.monotonic() - refused_at < 10 * BODY_TIMEOUT_S:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed with our last bytes unread
                break
            if not chunk:
                break
            after += chunk
        took = time.monotonic() - refused_at
    assert BODY_TIMEOUT_S - 0.1 < took < BODY_TIMEOUT_S + 2.0, took
    assert after == b""  # nothing more written after the 503
    for t in threads:
        t.join(30)


def test_a_retry_before_retry_after_waits_for_it_on_its_connection(server: RunningServer) -> None:
    """A client that retries a 503 at once on the same connection is held until its Retry-After and then refused
    (never run: "retry now"); a request on another connection is answered at once."""
    threads = _occupy(server, 2.5, 2)
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as eager, httpx.Client(base_url=server.url) as other:
        first = eager.post(INFER, content=_body(0), headers=headers)
        refused_at = time.monotonic()
        assert first.status_code == 503 and first.headers["retry-after"] == "1"
        started = time.monotonic()
        assert other.post(INFER, content=_body(0), headers=headers).status_code == 503
        assert time.monotonic() - started < 0.5  # another connection: not held
        again = eager.post(INFER, content=_body(0), headers=headers)
        assert time.monotonic() - refused_at >= 0.9  # held for the rest of its second
        assert again.status_code == 503 and again.headers["retry-after"] == "0"  # held, then refused: not run
        started = time.monotonic()
        third = eager.post(INFER, content=_body(0), headers=headers)  # judged as any: the model is still full
        assert third.status_code == 503 and third.headers["retry-after"] != "0"
        assert time.monotonic() - started < 0.5  # not held: it came when told to
    for t in threads:
        t.join(30)


def test_liveness_stays_fast_under_overload(server: RunningServer) -> None:
    """8 clients hammer a full model for about 2 s; a side probe of /v2/health/live every 50 ms stays fast, and
    the clients only ever see 200 or 503."""
    threads = _occupy(server, 1.0, 2)
    statuses: dict[int, int] = {}
    stop = time.monotonic() + 2.0
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while time.monotonic() < stop:
                r = client.post(INFER, content=_body(0.2), headers={"content-type": "application/json"})
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    clients = [threading.Thread(target=hammer) for _ in range(8)]
    for t in clients:
        t.start()
    probes: list[float] = []
    with httpx.Client(base_url=server.url, timeout=10) as probe:
        while time.monotonic() < stop:
            started = time.monotonic()
            assert probe.get("/v2/health/live").status_code == 200
            probes.append(time.monotonic() - started)
            time.sleep(0.05)
    for t in [*clients, *threads]:
        t.join(30)
    assert set(statuses) <= {200, 503} and statuses.get(503, 0) > 10, statuses
    probes.sort()
    median, worst = probes[len(probes) // 2], probes[-1]
    # the bench's bound is 100 ms at the worst; this machine is shared, so the worst gets room, the median none
    assert median < 0.1 and worst < 0.5, (median, worst, len(probes))


#: a request of each inference protocol: path and body (a row of ``seconds`` 0)
ROUTES = {
    "v2": (INFER, _body(0)),
    "records": ("/models/sleepy/predict", orjson.dumps({"seconds": 0})),
    "v1": ("/v1/models/sleepy:predict", orjson.dumps({"instances": [{"seconds": 0}]})),
}


def _exchange(sock: socket.socket, path: str, body: bytes, close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One POST on ``sock`` and its answer (framed by Content-Length, as every answer of the server's is)."""
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock.sendall((head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body)
    answer = b""

    def more() -> bytes:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {answer!r}"
        return chunk

    while b"\r\n\r\n" not in answer:
        answer += more()
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(payload) < int(headers["content-length"]):
        payload += more()
    return int(status_line.split()[1]), headers, payload


def _request(path: str, body: bytes, version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: test\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _answers(sock: socket.socket, n: int) -> list[Answer]:
    """The next ``n`` answers on ``sock`` (nothing else is read: each test's connection has its own)."""
    raw = b""
    while len(found := parse_answers(raw)) < n:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {raw!r}"
        raw += chunk
    return found


def _rejected(server: RunningServer) -> int:
    text = httpx.get(server.url + "/metrics").text
    found = re.findall(r'^modelapi_requests_rejected_total\{[^}]*reason="overloaded"[^}]*\} (\S+)$', text, re.M)
    return int(sum(float(v) for v in found))


def test_a_flood_is_refused_in_each_routes_style_and_a_kept_connection_is_served_after_it(
    server: RunningServer,
) -> None:
    """While the model is full, clients on new connections flood every inference protocol (the protocol refuses
    them on their heads once the app has refused one: http/shedding.py): only 200 or 503, every 503 with
    Retry-After in its route's error style and counted, liveness answers; a keep-alive connection refused during
    the flood is served on the same connection once it is over. On another, requests refused on their heads
    (written by the protocol itself, their bodies dropped unread: one sent in two parts, two pipelined) leave
    it usable; an HTTP/1.0 one is refused and its connection closed."""
    threads = _occupy(server, 1.5, 2)
    before = _rejected(server)
    url = urlsplit(server.url)
    address = (url.hostname or "127.0.0.1", url.port or 80)
    answers: list[tuple[str, int, dict[str, str], bytes]] = []
    stop = time.monotonic() + 0.8
    # each connection from a loopback address of its own: a new connection on the address and port of an earlier
    # one that was refused, before that refusal's Retry-After, is held as its early retry (http/holds.py)
    numbers = itertools.count()
    failures: list[BaseException] = []

    def flood(protocol: str) -> None:
        path, body = ROUTES[protocol]
        try:
            while time.monotonic() < stop:
                n = next(numbers)
                source = (f"127.1.{n // 250}.{n % 250 + 1}", 0)
                with socket.create_connection(address, timeout=10, source_address=source) as sock:
                    answers.append((protocol, *_exchange(sock, path, body, close=True)))
        except BaseException as exc:
            failures.append(exc)

    with socket.create_connection(address, timeout=10, source_address=("127.0.0.2", 0)) as kept:
        status, headers, _ = _exchange(kept, *ROUTES["v2"])
        assert status == 503 and headers["retry-after"].isdigit()
        clients = [threading.Thread(target=flood, args=(p,)) for p in ROUTES for _ in range(2)]
        for t in clients:
            t.start()
        live = httpx.get(server.url + "/v2/health/live", timeout=5)
        assert live.status_code == 200 and live.json() == {"live": True}
        with socket.create_connection(address, timeout=10, source_address=("127.0.0.3", 0)) as piped:
            split = _request(*ROUTES["v2"])
            piped.sendall(split[:-5])  # its head and part of its body
            (first,) = _answers(piped, 1)
            piped.sendall(split[-5:] + _request(*ROUTES["records"]) + _request(*ROUTES["v1"]))
            second, third = _answers(piped, 2)
            piped.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            (probe,) = _answers(piped, 1)
        assert [a.status for a in (first, second, third, probe)] == [503, 503, 503, 200]
        assert [a.headers["content-type"] for a in (first, second, third)] == [
            "application/json",
            "application/problem+json",
            "application/problem+json",
        ]
        assert all(a.headers["retry-after"].isdigit() for a in (first, second, third)) and probe.json()["live"]
        with socket.create_connection(address, timeout=10, source_address=("127.0.0.4", 0)) as old:
            old.sendall(_request(*ROUTES["v2"], version="1.0"))
            (answer,) = _answers(old, 1)
            assert answer.status == 503 and answer.headers["connection"] == "close"
            assert old.recv(65536) == b""  # closed after it
        for t in threads:  # the slow requests end: the model is free again
            t.join(30)
        status, _, payload = _exchange(kept, *ROUTES["v2"])  # the same connection (held if its Retry-After is to come)
        assert status == 200 and orjson.loads(payload)["outputs"][0]["data"] == [0.0]
        for t in clients:
            t.join(30)
    assert not failures, failures
    assert {s for _, s, _, _ in answers} <= {200, 503}
    refused = [(p, h, b) for p, s, h, b in answers if s == 503]
    assert {p for p, _, _ in refused} == set(ROUTES), answers[:3]
    for protocol, headers, body in refused:
        assert headers["retry-after"].isdigit() and headers["x-request-id"]
        if protocol == "v2":
            assert headers["content-type"] == "application/json" and "max_inflight" in orjson.loads(body)["error"]
        else:
            problem = orjson.loads(body)
            assert headers["content-type"] == "application/problem+json"
            assert (problem["title"], problem["status"]) == ("Overloaded", 503) and "max_inflight" in problem["detail"]
    assert _rejected(server) - before == len(refused) + 1 + 4  # and the kept connection's, and the four above


def test_the_server_log_has_one_warning_a_second_not_one_a_refusal(server: RunningServer, tmp_path: Path) -> None:
    log = server.log()
    lines = [line for line in log.splitlines() if "refused" in line and "overloaded" in line]
    assert lines, log[-2000:]
    assert len(lines) < 40  # the tests above refused hundreds


def test_a_held_retry_is_sent_back_as_soon_as_the_model_is_free(server: RunningServer) -> None:
    """Holds are work-conserving (http/holds.py): a retry sent at once after a 503 whose Retry-After is seconds
    away (the schedule of returns booked ahead by a flood's refusals) is held while the model is full, answered
    503 "retry now" as soon as the slow requests end, not at its Retry-After, and never run; the request sent
    again at once is served."""
    threads = _occupy(server, 1.0, 2)
    url = urlsplit(server.url)
    address = (url.hostname or "127.0.0.1", url.port or 80)
    for n in range(80):  # refusals on connections of their own book the schedule about 4 s ahead (20 a second)
        with socket.create_connection(address, timeout=10, source_address=(f"127.2.0.{n + 1}", 0)) as sock:
            assert _exchange(sock, *ROUTES["v2"], close=True)[0] == 503
    with httpx.Client(base_url=server.url, timeout=30) as eager:
        first = eager.post(INFER, content=_body(0), headers={"content-type": "application/json"})
        retry_after = int(first.headers["retry-after"])
        assert first.status_code == 503 and retry_after >= 3
        started = time.monotonic()
        again = eager.post(INFER, content=_body(0), headers={"content-type": "application/json"})
        assert time.monotonic() - started < retry_after - 1  # held while the model was full, not until its time
        assert again.status_code == 503 and again.headers["retry-after"] == "0"
        assert "held" in again.json()["error"] and "send it again now" in again.json()["error"]
        served = eager.post(INFER, content=_body(0), headers={"content-type": "application/json"})
        assert served.status_code == 200 and time.monotonic() - started < retry_after - 1
    for t in threads:
        t.join(30)


def _in_flight(url: str) -> float:
    samples = parse(httpx.get(url + "/metrics", timeout=10).text)
    return sum(matching(samples, "modelapi_requests_in_flight", model="sleepy").values())


def _rows_inferred(url: str) -> float:
    samples = parse(httpx.get(url + "/metrics", timeout=10).text)
    return sum(matching(samples, "modelapi_rows_inferred_total", model="sleepy").values())


@pytest.mark.parametrize("pad", [0, 150_000], ids=["small-body", "large-body"])
def test_a_client_that_leaves_while_its_rows_wait_is_dropped_before_its_batch(tmp_path: Path, pad: int) -> None:
    """Over real sockets, with batching on: a client that closes its connection while its request waits behind a
    running batch never has its rows run (the protocol tells the queue its connection is gone as the next batch
    forms: ``context.CallContext.gone``), its access line says 499, and the server goes on serving. Also after a
    body whose last read is over uvicorn's high-water mark (64 KiB), which pauses reading: the protocol reads on
    once the body is in, so that the client's leaving is seen."""
    with serve(SLEEPY, tmp_dir=tmp_path, timeout=120) as running:
        before = _rows_inferred(running.url)
        slow = threading.Thread(
            target=lambda: httpx.post(
                running.url + INFER, content=_body(1.5), headers={"content-type": "application/json"}, timeout=30
            )
        )
        slow.start()
        deadline = time.monotonic() + 10
        while _in_flight(running.url) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # its batch runs
        url = urlsplit(running.url)
        body = _body(0.01) + b" " * pad
        head = (
            f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-request-id: leaver-1\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
            if pad:  # the body's last 90 KB in one read, after the rest
                sock.sendall(head + body[:-90_000])
                time.sleep(0.05)
                sock.sendall(body[-90_000:])
            else:
                sock.sendall(head + body)
            time.sleep(0.3)  # queued behind the slow batch
        slow.join(30)
        served = httpx.post(
            running.url + INFER, content=_body(0.01), headers={"content-type": "application/json"}, timeout=30
        )
        assert served.status_code == 200
        log = running.log_with("leaver-1", timeout=10)
        line = next(line for line in log.splitlines() if "leaver-1" in line)
        assert " 499 " in line or '"status": 499' in line, line
        assert _rows_inferred(running.url) - before == 2  # the slow request's and the last one's, not the leaver's
