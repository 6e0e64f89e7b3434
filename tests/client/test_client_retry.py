"""Retries, backoff, Retry-After and the deadline, exactly: a scripted transport, a fake clock and sleep, and a
seeded random source. The sync and the async client run the same scripts (one implementation, two loops)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from clientfakes import ANSWER, ROW, SEED, FakeTime, Script, jitters, problem

from modelapi import (
    AsyncClient,
    BadRequestError,
    Client,
    ClientTimeoutError,
    ConnectionFailedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)
from modelapi.client.retry import Request, RetryPolicy, Send, Sleep, exchange, parse_retry_after

URL = "http://modelapi.test"
Caller = Callable[..., Any]


def sync_call(script: Script, fake: FakeTime, method: str, *args: Any, **options: Any) -> Any:
    options = {"rng": random.Random(SEED), **options}
    with Client(URL, transport=script.transport(), sleep=fake.sleep, clock=fake.clock, **options) as client:
        return getattr(client, method)(*args)


def async_call(script: Script, fake: FakeTime, method: str, *args: Any, **options: Any) -> Any:
    options = {"rng": random.Random(SEED), **options}

    async def run() -> Any:
        async with AsyncClient(
            URL, transport=script.transport(), sleep=fake.async_sleep, clock=fake.clock, **options
        ) as client:
            return await getattr(client, method)(*args)

    return asyncio.run(run())


both = pytest.mark.parametrize("call", [sync_call, async_call], ids=["sync", "async"])


@both
def test_503_then_answer_waits_a_full_jitter_backoff(call: Caller) -> None:
    script, fake = Script([problem(503, "busy"), problem(503, "busy"), httpx.Response(200, json=ANSWER)]), FakeTime()
    assert call(script, fake, "predict", "iris", ROW) == ANSWER
    assert fake.sleeps == jitters(2)
    assert 0 <= fake.sleeps[0] <= 0.25 and 0 <= fake.sleeps[1] <= 0.5
    ids = {r.headers["x-request-id"] for r in script.requests}
    assert len(ids) == 1  # one call, one request id, so the server's log joins the attempts


@both
def test_retry_after_in_seconds_is_the_least_wait(call: Caller) -> None:
    script = Script([problem(429, "slow down", **{"retry-after": "3"}), httpx.Response(200, json=ANSWER)])
    fake = FakeTime()
    assert call(script, fake, "predict", "iris", ROW) == ANSWER
    assert fake.sleeps == [3.0]


@both
def test_retry_after_as_an_http_date(call: Caller) -> None:
    when = httpx.Response(503, headers={"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    script, fake = Script([when, httpx.Response(200, json=ANSWER)]), FakeTime()
    with pytest.raises(ServiceUnavailableError):  # decades away: past the deadline, so the 503 is reported
        call(script, fake, "predict", "iris", ROW)
    assert fake.sleeps == []


def test_parse_retry_after() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=lambda: 40.0) == 60.0


@both
def test_connection_errors_are_retried_then_reported(call: Caller) -> None:
    refused = [httpx.ConnectError("connection refused") for _ in range(3)]
    script, fake = Script(list(refused)), FakeTime()
    with pytest.raises(ConnectionFailedError, match="cannot reach the server after 3 attempts: connection refused"):
        call(script, fake, "predict", "iris", ROW, retries=2)
    assert len(script.requests) == 3 and fake.sleeps == jitters(2)


@both
def test_a_dropped_connection_is_retried(call: Caller) -> None:
    script, fake = Script([httpx.RemoteProtocolError("peer closed"), httpx.Response(200, json=ANSWER)]), FakeTime()
    assert call(script, fake, "predict", "iris", ROW) == ANSWER


@both
def test_retries_exhausted_raise_the_servers_answer(call: Caller) -> None:
    script, fake = Script([problem(503, "draining", f"r{i}") for i in range(3)]), FakeTime()
    with pytest.raises(ServiceUnavailableError) as info:
        call(script, fake, "predict", "iris", ROW, retries=2)
    assert info.value.status == 503 and info.value.message == "draining" and info.value.request_id == "r2"
    assert len(fake.sleeps) == 2


@both
def test_the_deadline_bounds_all_the_waits(call: Caller) -> None:
    """Retry-After 30 s with 10 s left: no wait is started, the 429 is reported at once."""
    script, fake = Script([problem(429, "slow down", **{"retry-after": "30"})]), FakeTime()
    with pytest.raises(RateLimitError, match="slow down"):
        call(script, fake, "predict", "iris", ROW, deadline=10.0)
    assert fake.sleeps == []


@both
def test_each_attempt_gets_what_is_left_of_the_deadline(call: Caller) -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=ANSWER)

    script = Script([problem(503, "busy", **{"retry-after": "8"}), answer])
    fake = FakeTime()
    call(script, fake, "predict", "iris", ROW, deadline=10.0, timeout=5.0)
    assert seen[0]["read"] == pytest.approx(2.0)  # 10 s deadline - 8 s waited


@both
def test_a_wait_past_the_deadline_on_connection_errors_raises(call: Caller) -> None:
    script, fake = Script([httpx.ConnectError("refused")]), FakeTime()
    with pytest.raises(ConnectionFailedError, match=r"deadline of 0\.1 s"):
        call(script, fake, "predict", "iris", ROW, deadline=0.1, backoff=5.0)
    assert jitters(1, backoff=5.0)[0] > 0.1


@both
def test_client_errors_and_500_are_not_retried(call: Caller) -> None:
    for status, cls in ((400, BadRequestError), (500, ServerError)):
        script, fake = Script([problem(status, "no")]), FakeTime()
        with pytest.raises(cls):
            call(script, fake, "predict", "iris", ROW)
        assert len(script.requests) == 1 and fake.sleeps == []


@both
def test_a_read_timeout_is_not_retried(call: Caller) -> None:
    script, fake = Script([httpx.ReadTimeout("slow")]), FakeTime()
    with pytest.raises(ClientTimeoutError, match=r"no answer within 60 s"):
        call(script, fake, "predict", "iris", ROW)
    assert len(script.requests) == 1


@both
def test_job_submission_retries_carry_one_idempotency_key(call: Caller) -> None:
    job = {"id": "j1", "model": "iris", "status": "queued", "progress": {"rows_done": 0, "rows_total": 1}}
    accepted = httpx.Response(202, json=job, headers={"location": "/jobs/j1"})
    script, fake = Script([httpx.WriteError("reset"), problem(503, "busy"), accepted]), FakeTime()
    result = call(script, fake, "submit_job", "iris", [ROW])
    assert result.id == "j1" and result.location == "/jobs/j1"
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1  # the server returns the same job for a repeat
    assert script.bodies[0] == script.bodies[2]


@both
def test_ready_is_one_probe(call: Caller) -> None:
    script, fake = Script([httpx.Response(503, json={"ready": False})]), FakeTime()
    assert call(script, fake, "ready") is False
    script = Script([httpx.Response(200, json={"ready": True})])
    assert call(script, fake, "ready", "iris") is True
    assert script.requests[0].url.path == "/v2/models/iris/ready"
    with pytest.raises(ConnectionFailedError):
        call(Script([httpx.ConnectError("refused")]), fake, "ready")


def test_the_policy_is_a_plain_generator() -> None:
    """No client at all: the steps for a 503 then a 200, driven by hand."""
    fake = FakeTime()
    policy = RetryPolicy(retries=1, clock=fake.clock, rng=random.Random(SEED))
    request = httpx.Request("GET", URL + "/models")
    steps = exchange(Request("GET", "/models"), policy)
    op = next(steps)
    assert isinstance(op, Send) and op.timeout == 60.0
    op = steps.send(httpx.Response(503, request=request))
    assert isinstance(op, Sleep) and op.seconds == jitters(1)[0]
    op = steps.send(None)
    assert isinstance(op, Send)
    with pytest.raises(StopIteration) as stop:
        steps.send(httpx.Response(200, request=request))
    assert stop.value.value.status_code == 200


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client(URL, timeout=0)
    with pytest.raises(ValueError, match="url"):
        Client("127.0.0.1:8000")
