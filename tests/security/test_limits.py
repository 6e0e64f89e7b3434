"""Request limits in process: JSON depth and elements, per-key rate (429), in-flight per model (503),
inference timeout (504). Body size, body-read timeout and headers are in tests/http/test_middleware.py; the
header timeout and slow clients on the real server in tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.errors import InferenceTimeout, MalformedRequest, PayloadTooLarge
from modelapi.gate import ModelGate
from modelapi.http.app import create_app
from modelapi.security import json_limits
from modelapi.security.limits import RateLimiter
from modelapi.settings import Settings
from toymodels import IrisClassifier, Sleepy

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# JSON depth and elements: the scanner ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "depth", "elements"),
    [
        (b'{"a": 1}', 1, 1),
        (b"[[1, 2], [3, [4]]]", 3, 4),
        (b'{"s": "[[[[,,,,{{{{"}', 1, 1),  # brackets and commas inside strings do not count
        (rb'["a\"[[[,", "b"]', 1, 2),  # an escaped quote does not end the string
        (rb'["a\\", "[[", "c"]', 1, 3),  # an escaped backslash does not escape the quote after it
        (rb'["\\\"[[,", 1]', 1, 2),  # three backslashes: the last escapes the quote
        (nested(100), 100, 1),
    ],
)
def test_measure(body: bytes, depth: int, elements: int) -> None:
    assert json_limits.measure(body) == (depth, elements)
    orjson.loads(body)  # the cases are valid JSON


def test_check_names_the_limits() -> None:
    json_limits.check(nested(32), max_depth=32, max_elements=10)
    with pytest.raises(MalformedRequest, match=r"nests 33 levels deep; the limit is 32 \(max_json_depth\)"):
        json_limits.check(nested(33), max_depth=32, max_elements=10)
    json_limits.check(b"[" + b"1," * 9 + b"1]", max_depth=32, max_elements=10)
    with pytest.raises(PayloadTooLarge, match=r"holds 11 elements; the limit is 10 \(max_json_elements\)"):
        json_limits.check(b"[" + b"1," * 10 + b"1]", max_depth=32, max_elements=10)
    # a string full of brackets passes the quick bound's failure and the exact scan's success
    json_limits.check(b'["' + b"[" * 100 + b'"]', max_depth=32, max_elements=10)


@pytest.mark.parametrize(
    ("body", "openings"),
    [
        (b"1", 0),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"s": "[{"}', 3),  # those in strings too: an upper bound on the containers
        (nested(20), 20),
        (b'["' + b"[" * 100 + b'"]', 101),  # past the quick bound: the exact scan's path
    ],
)
def test_check_counts_the_openings_on_the_way(body: bytes, openings: int) -> None:
    assert json_limits.openings(body) == openings
    assert json_limits.check(body, max_depth=32, max_elements=10) == openings


def test_the_worst_body_under_the_size_limit_is_refused_quickly() -> None:
    """Empty lists cost the most memory per byte (32 MB would parse into about 1 GB, in seconds); refusing
    such a body costs less than parsing half of it (a ratio, so that a loaded machine does not fail it)."""
    body = b"[" + b"[]," * 1_100_000 + b"[]]"
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="holds 1100001 elements"):
        json_limits.check(body, max_depth=32, max_elements=200_000)
    refused = time.perf_counter() - started
    half = b"[" + b"[]," * 550_000 + b"[]]"
    started = time.perf_counter()
    orjson.loads(half)
    assert refused < time.perf_counter() - started
    with pytest.raises(PayloadTooLarge, match="holds 1100002 elements"):  # the same with a string in it
        json_limits.check(b'["s",' + body[1:], max_depth=32, max_elements=200_000)


@pytest.fixture
def iris_client() -> Iterator[TestClient]:
    app = create_app([IrisClassifier()], Settings(max_json_depth=8, max_json_elements=50))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", ["/models/iris/predict", "/v2/models/iris/infer", "/v1/models/iris:predict"])
def test_json_depth_over_http(iris_client: TestClient, path: str) -> None:
    r = iris_client.post(path, content=nested(9), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "the limit is 8 (max_json_depth)" in r.text


def test_json_elements_over_http(iris_client: TestClient) -> None:
    r = iris_client.post("/models/iris/predict", json=[ROW] * 20)  # 20 records x 4 members = 80 elements
    assert r.status_code == 413, r.text
    assert "the limit is 50 (max_json_elements)" in r.text
    r = iris_client.post("/models/iris/predict", json=[ROW] * 10)
    assert r.status_code == 200, r.text


# per-key rate ------------------------------------------------------------------------------------------------
def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("a") == pytest.approx(0.5)  # the next token is due in 1/rate s
    assert limiter.wait_s("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert limiter.wait_s("a") == 0.0
    assert limiter.wait_s("a") > 0
    now[0] += 100  # idle buckets are dropped once full again
    limiter.wait_s("c")
    assert set(limiter.buckets) == {"c"}
    now[0] += 10  # a bucket idle for long holds no more than the burst
    assert [limiter.wait_s("c") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("c") == pytest.approx(0.5)


def test_rate_limit_per_key(tmp_path: Path) -> None:
    settings = Settings(auth="on", state_dir=tmp_path, rate_limit=0.5, rate_burst=2)
    key_a, key_b = create_key(tmp_path, "a"), create_key(tmp_path, "b")
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        a = {"authorization": f"Bearer {key_a}"}
        assert client.get("/models/iris", headers=a).status_code == 200
        assert client.post("/models/iris/predict", json=ROW, headers=a).status_code == 200
        r = client.post("/models/iris/predict", json=ROW, headers=a)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "2"  # 1 / 0.5 requests per second
        assert "rate limit of 0.5 requests per second" in r.json()["detail"]
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert client.get("/models/iris", headers={"x-api-key": key_b}).status_code == 200  # b has its own
        assert client.get("/models/iris").status_code == 401  # no key: authentication answers first
        assert client.get("/v2/health/ready").status_code == 200  # probes carry no key and are not limited


def test_no_rate_limit_without_authentication() -> None:
    with TestClient(create_app([IrisClassifier()], Settings(rate_limit=0.5, rate_burst=1))) as client:
        assert all(client.get("/models/iris").status_code == 200 for _ in range(5))


# in flight per model, and the inference timeout -----------------------------------------------------------
Scenario = Callable[[httpx.AsyncClient, ModelGate], Awaitable[None]]


def with_sleepy(scenario: Scenario) -> None:
    """Run ``scenario`` against an app serving Sleepy (2 in flight, 1 s timeout, no batching) and iris. Early retries
    are not held: every request of an in-process client comes from one address and port, so each one after a 503
    would be held as its early retry and refused (tests/http/test_holds.py)."""
    settings = Settings(max_inflight=2, inference_timeout_s=1.0, batching=False, hold_early_retries=False)
    app = create_app([Sleepy(), IrisClassifier()], settings)
    gate = app.state.dataplane.gate
    assert isinstance(gate, ModelGate)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await scenario(client, gate)

    asyncio.run(main())


def sleep_for(seconds: float) -> dict[str, Any]:
    return {"seconds": seconds}


def test_in_flight_limit_per_model() -> None:
    async def scenario(client: httpx.AsyncClient, gate: ModelGate) -> None:
        slow = [asyncio.create_task(client.post("/models/sleepy/predict", json=sleep_for(0.5))) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert gate.inflight == {"sleepy": 2}
        r = await client.post("/models/sleepy/predict", json=sleep_for(0))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "2 requests in flight, the limit (max_inflight)" in r.json()["detail"]
        v2 = {"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [0]}]}
        r = await client.post("/v2/models/sleepy/infer", json=v2)
        assert r.status_code == 503 and "max_inflight" in r.json()["error"]
        assert (await client.post("/models/iris/predict", json=ROW)).status_code == 200  # other models go on
        assert [t.status_code for t in await asyncio.gather(*slow)] == [200, 200]
        assert (await client.post("/models/sleepy/predict", json=sleep_for(0))).status_code == 200
        assert gate.inflight == {}

    with_sleepy(scenario)


def test_inference_timeout() -> None:
    async def scenario(client: httpx.AsyncClient, gate: ModelGate) -> None:
        r = await client.post("/models/sleepy/predict", json=sleep_for(1.5))
        assert r.status_code == 504, r.text
        assert "longer than the inference timeout of 1 s (inference_timeout_s)" in r.json()["detail"]
        assert gate.inflight == {}  # the timed-out request gave its slot back
        # the abandoned work finishes on its thread; the model keeps serving
        assert (await client.post("/models/sleepy/predict", json=sleep_for(0))).status_code == 200

    with_sleepy(scenario)


def test_unknown_model_names_leave_nothing_behind() -> None:
    async def scenario(client: httpx.AsyncClient, gate: ModelGate) -> None:
        for i in range(3):
            assert (await client.post(f"/models/nope{i}/predict", json=sleep_for(0))).status_code == 404
        assert gate.inflight == {}

    with_sleepy(scenario)


def test_work_outside_http_is_not_limited() -> None:
    """Batch jobs call the data plane with their own context: no inference timeout (their chunks bound them)."""
    import numpy as np

    from modelapi.context import CallContext
    from modelapi.dataplane import DataPlane
    from modelapi.inference import InferenceRequest

    plane = DataPlane.from_settings(Settings(inference_timeout_s=0.05), models=[Sleepy()])

    async def go() -> None:
        await plane.start()
        try:
            untimed = CallContext("jobs", timed=False)
            answer = await plane.infer("sleepy", InferenceRequest({"seconds": np.array([0.2])}), untimed)
            assert answer.outputs["seconds"].tolist() == [0.2]
            with pytest.raises(InferenceTimeout):
                await plane.infer("sleepy", InferenceRequest({"seconds": np.array([0.2])}))
        finally:
            await plane.close()

    asyncio.run(go())


# every limit is a flag and an environment variable ---------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value", "field", "expected"),
    [
        ("--max-json-depth", "16", "max_json_depth", 16),
        ("--max-json-elements", "1000", "max_json_elements", 1000),
        ("--rate-limit", "2.5", "rate_limit", 2.5),
        ("--rate-burst", "7", "rate_burst", 7),
        ("--max-inflight", "9", "max_inflight", 9),
        ("--inference-timeout", "1.5", "inference_timeout_s", 1.5),
        ("--max-queue-ms", "250", "max_queue_ms", 250.0),
        ("--max-upload-bytes", "1000000", "max_upload_bytes", 1_000_000),
        ("--header-timeout", "3", "header_timeout_s", 3.0),
        ("--max-header-bytes", "2048", "max_header_bytes", 2048),
        ("--body-timeout", "4", "body_timeout_s", 4.0),
        ("--keep-alive", "2", "keep_alive_s", 2.0),
        ("--cors-origin", "https://a.example", "cors_origins", ["https://a.example"]),
    ],
)
def test_flags_and_environment(
    flag: str, value: str, field: str, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelapi.cli import _settings, build_parser

    args = build_parser().parse_args(["serve", flag, value])
    assert getattr(_settings(args, []), field) == expected
    env_value = '["https://a.example"]' if field == "cors_origins" else value
    monkeypatch.setenv(f"MODELAPI_{field.upper()}", env_value)
    assert getattr(Settings(), field) == expected
    assert Settings.model_fields[field].get_default(call_default_factory=True) != expected  # not the default
