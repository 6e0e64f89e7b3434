"""The request-context middleware: request id, standard headers (CSP, HSTS on TLS), CORS, body size counted
while streaming (the liar's Content-Length), the body-read timeout (408), errors raised outside the routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from modelapi.errors import TooManyRequests
from modelapi.events import Events, Observer, RequestRejected
from modelapi.http import docs
from modelapi.http.app import create_app
from modelapi.http.holds import RetryHolds
from modelapi.http.middleware import CSP, RequestContextMiddleware, cors
from modelapi.security.slow_clients import BODY_IN
from modelapi.settings import Settings
from toymodels import IrisClassifier

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    with TestClient(create_app([IrisClassifier()], Settings()), raise_server_exceptions=False) as c:
        yield c


# headers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/models/iris", 200),
        ("POST", "/predict", 200),
        ("POST", "/v2/models/iris/infer", 400),
        ("GET", "/openapi.json", 200),
        ("GET", "/nowhere", 404),
    ],
)
def test_standard_headers(app_client: TestClient, method: str, path: str, status: int) -> None:
    r = app_client.request(method, path, json=ROW if method == "POST" else None)
    assert r.status_code == status
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert len(r.headers["x-request-id"]) >= 16
    assert "strict-transport-security" not in r.headers  # plain HTTP: HSTS would be ignored, and wrong
    assert "access-control-allow-origin" not in r.headers


def test_request_ids_do_not_repeat_when_a_model_seeds_random(app_client: TestClient) -> None:
    import random

    ids = []
    for _ in range(2):
        random.seed(0)  # what reproducible ML code does; the ids must not follow
        ids.append(app_client.get("/v2/health/live").headers["x-request-id"])
    assert ids[0] != ids[1]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_docs_page_keeps_its_own_csp(app_client: TestClient) -> None:
    r = app_client.get("/docs")
    assert r.status_code == 200
    assert r.headers.get_list("content-security-policy") == [docs.CSP]
    policy = dict(part.strip().split(" ", 1) for part in docs.CSP.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no CDN, no eval
    assert all("unsafe" not in v and "http" not in v and "*" not in v for v in policy.values())


def test_hsts_on_tls() -> None:
    app = create_app([IrisClassifier()], Settings())
    with TestClient(app, base_url="https://testserver") as client:
        r = client.get("/models/iris")
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert r.headers["content-security-policy"] == CSP


# CORS -----------------------------------------------------------------------------------------------------
def preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/predict",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        },
    )


def test_cors_off_by_default(app_client: TestClient) -> None:
    r = preflight(app_client, "https://app.example.com")
    assert "access-control-allow-origin" not in r.headers
    r = app_client.post("/predict", json=ROW, headers={"origin": "https://app.example.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allow_list(tmp_path: Any) -> None:
    settings = Settings(cors_origins=["https://app.example.com"], auth="on", state_dir=tmp_path)
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        r = preflight(client, "https://app.example.com")  # preflights carry no key: answered before auth
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        assert preflight(client, "https://evil.example.net").status_code == 400
        r = client.get("/models/iris", headers={"origin": "https://app.example.com"})
        assert r.status_code == 401  # CORS lets the browser read the answer; it does not authenticate
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = client.get("/models/iris", headers={"origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_cors_origins_must_be_origins(origin: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(cors_origins=[origin])


# the body, at the ASGI level ---------------------------------------------------------------------------------
async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    await JSONResponse({"length": len(body)})(scope, receive, send)


def call(
    messages: list[Message], headers: list[tuple[bytes, bytes]], *, stall: bool = False, **options: Any
) -> tuple[int, dict[str, str], bytes, float]:
    """Run the middleware around ``echo_length`` with a client that sends ``messages`` (then stalls)."""
    app = RequestContextMiddleware(echo_length, **{"max_body_bytes": 100, **options})
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
        "headers": headers, "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": "",
    }  # fmt: skip
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    started = time.monotonic()
    asyncio.run(app(scope, receive, send))
    took = time.monotonic() - started
    start = sent[0]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], head, b"".join(m.get("body", b"") for m in sent[1:]), took


def chunks(n: int, size: int = 10) -> list[Message]:
    return [{"type": "http.request", "body": b"x" * size, "more_body": i < n - 1} for i in range(n)]


def test_body_within_limits() -> None:
    status, _, body, _ = call(chunks(10), [(b"content-length", b"100")])
    assert status == 200 and body == b'{"length":100}'


def test_declared_length_over_the_limit() -> None:
    status, head, body, _ = call(chunks(1), [(b"content-length", b"101")])
    assert status == 413 and head["connection"] == "close"
    assert b"larger than the limit of 100 bytes (max_body_bytes)" in body


@pytest.mark.parametrize("declared", [b"10", None])
def test_liars_content_length(declared: bytes | None) -> None:
    """Declared small (or not at all: chunked), sends more: counted as it streams, 413 all the same."""
    headers = [(b"content-length", declared)] if declared else [(b"transfer-encoding", b"chunked")]
    status, head, body, _ = call(chunks(20), headers)
    assert status == 413, body
    assert head["connection"] == "close"
    assert b"max_body_bytes" in body


def test_stalled_body_times_out() -> None:
    started = [{"type": "http.request", "body": b"x" * 10, "more_body": True}] * 3
    status, head, body, took = call(started, [(b"content-length", b"100")], stall=True, body_timeout_s=0.3)
    assert status == 408, body
    assert head["connection"] == "close"
    assert b"did not arrive within 0.3 s (body_timeout_s)" in body
    assert 0.3 <= took < 2


def test_trickled_body_times_out_as_a_whole() -> None:
    """A byte now and then keeps no timer alive: the whole body has ``body_timeout_s``."""

    async def trickle(scope: Scope, receive: Receive, send: Send) -> None:
        await echo_length(scope, receive, send)

    messages = [{"type": "http.request", "body": b"x", "more_body": True}] * 50
    app = RequestContextMiddleware(trickle, max_body_bytes=100, body_timeout_s=0.3)
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        await asyncio.sleep(0.05)
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
        "headers": [(b"content-length", b"50")], "scheme": "http", "server": ("t", 80), "client": ("t", 1),
        "root_path": "",
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 408
    assert len(queue) > 30  # stopped after about 0.3 s, not after all 50 bytes


def test_errors_raised_outside_the_routes_are_rendered() -> None:
    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        raise TooManyRequests("slow down", headers={"retry-after": "3"})

    app = RequestContextMiddleware(limited, max_body_bytes=100)
    r = TestClient(app).get("/anything")  # no lifespan: this app only knows HTTP
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json()["detail"] == "slow down"
    assert r.json()["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("hold", [True, False])
def test_a_retry_before_its_retry_after_is_held_until_then(hold: bool) -> None:
    """On the same connection and path, a request that follows a 503 sooner than its Retry-After waits for the
    rest of it and is then refused, never run, with "Retry-After: 0"; the next one is not held
    (--no-hold-early-retries: none is held, all run); another connection or path is not held, nor is a 429's
    retry."""
    holds = RetryHolds() if hold else None
    answers = iter([(503, b"0.3"), (200, None), (429, b"0.3"), (200, None), (503, b"0.3"), (200, None)])
    ran = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        status, retry_after = next(answers)
        ran.append(status)
        headers = {"retry-after": retry_after.decode()} if retry_after else None
        await JSONResponse({}, status_code=status, headers=headers)(scope, receive, send)

    app = RequestContextMiddleware(inner, max_body_bytes=100, holds=holds)

    async def one(client: tuple[str, int], path: str = "/x") -> tuple[int, float]:
        scope: dict[str, Any] = {
            "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [], "scheme": "http", "server": ("test", 80), "client": client, "root_path": "",
        }  # fmt: skip
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        started = time.monotonic()
        await app(scope, receive, send)
        responses.append(sent)
        return sent[0]["status"], time.monotonic() - started

    responses: list[list[Message]] = []

    async def go() -> list[tuple[int, float]]:
        return [
            await one(("test", 1)),  # 503, Retry-After 0.3
            await one(("test", 1)),  # at once: held the rest of 0.3 s, then refused unrun (when holding)
            *([await one(("test", 1))] if hold else []),  # at once again: told "now", so not held
            await one(("test", 1)),  # 429
            await one(("test", 1)),  # never held after a 429
            await one(("test", 1)),  # 503 again
            await one(("test", 2)),  # another connection: not held
        ]

    got = asyncio.run(go())
    assert ran == [503, 200, 429, 200, 503, 200]  # the held request never reached the app
    if hold:
        held_status, held_for = got.pop(1)
        assert held_status == 503 and 0.25 < held_for < 1.0
        head = dict(responses[1][0]["headers"])
        assert head[b"retry-after"] == b"0" and head[b"content-type"] == b"application/problem+json"
        detail = orjson.loads(responses[1][1]["body"])["detail"]
        assert detail == (
            "sent before the Retry-After this connection was given for this path: held 0.3 s and not run; send it again"
            " now"
        )
    assert [status for status, _ in got] == [503, 200, 429, 200, 503, 200]
    assert all(took < 0.2 for _, took in got[1:])
    if holds is not None:  # the 503 to connection 1 still waits to be held, for that connection and path only
        assert list(holds.until) == [(("test", 1), "/x")]


def _held_retry(
    headers: list[tuple[bytes, bytes]],
    cors_origins: list[str] | None = None,
    gone: bool = False,
    method: str = "POST",
) -> tuple[list[Message], list[RequestRejected]]:
    """A 503 with Retry-After 0.1, then the same connection's retry at once (``method``), held and answered: what
    was sent for the retry, and the refusals observed. ``gone``: its client left while it was held (its body was
    in)."""
    rejected: list[RequestRejected] = []

    class Rejections(Observer):
        def request_rejected(self, event: RequestRejected) -> None:
            rejected.append(event)

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({}, status_code=503, headers={"retry-after": "0.1"})(scope, receive, send)

    settings = Settings(cors_origins=cors_origins or [])
    app = RequestContextMiddleware(
        refuse, max_body_bytes=100, holds=RetryHolds(), events=Events(Rejections()), cors=cors(settings)
    )

    async def one(method: str = "POST") -> list[Message]:
        scope: dict[str, Any] = {
            "type": "http", "method": method, "path": "/x", "raw_path": b"/x", "query_string": b"",
            "headers": headers, "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": "",
            BODY_IN: True,
        }  # fmt: skip
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"} if gone else {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    async def go() -> list[Message]:
        await one()
        rejected.clear()
        return await one(method)

    return asyncio.run(go()), rejected


def test_a_held_retrys_answer_carries_cors_headers_for_a_browser() -> None:
    origin = [(b"origin", b"https://app.example")]
    sent, rejected = _held_retry(origin, cors_origins=["https://app.example"])
    head = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503 and head[b"retry-after"] == b"0"
    assert head[b"access-control-allow-origin"] == b"https://app.example"
    assert rejected == [RequestRejected(None, "http", "early_retry", 503)]
    sent, _ = _held_retry(origin)  # CORS off: none
    assert b"access-control-allow-origin" not in dict(sent[0]["headers"])


def test_a_browsers_preflight_is_not_held_as_a_retry() -> None:
    """A browser asks again before its POST (an OPTIONS preflight, once its cached answer is old): no retry."""
    preflight = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")]
    sent, rejected = _held_retry(preflight, cors_origins=["https://app.example"], method="OPTIONS")
    assert dict(sent[0]["headers"])[b"retry-after"] == b"0.1" and rejected == []  # the app's own answer: not held


def test_a_held_retry_that_waits_for_100_continue_is_answered_and_its_connection_closed() -> None:
    sent, _ = _held_retry([(b"expect", b"100-continue")])
    head = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503 and head[b"connection"] == b"close"
    assert b"connection" not in dict(_held_retry([])[0][0]["headers"])


def test_a_held_retry_whose_client_left_gets_no_answer_and_counts_no_refusal() -> None:
    sent, rejected = _held_retry([], gone=True)
    assert sent == [] and rejected == []
