"""Fuzzing the real server: schemathesis against its own ``/openapi.json``, without a key (authentication off on
loopback) and with one (authentication on), checking for no server error and no answer that breaks the
document; then a 100,000-deep JSON body and random bytes on every body-taking route, after which the worker
still answers. Bounded: a few examples per operation, so the module takes well under a minute on a quiet
machine."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from helpers.keys import cli_create_key

from .server import RunningServer, serve

EXAMPLES = int(os.environ.get("MODELAPI_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
# the server turns away more than its limits allow; 1000 requests/s keeps the fuzzer from meeting the rate limit
LIMITS = ("--rate-limit", "1000", "--max-json-depth", "32")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    state = tmp_path_factory.mktemp("fuzz-open")
    with serve(*LIMITS, "--state-dir", str(state), tmp_dir=state, timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    state = tmp_path_factory.mktemp("fuzz-keyed")
    key = cli_create_key(state)
    with serve(*LIMITS, "--auth", "on", "--state-dir", str(state), tmp_dir=state, timeout=120) as server:
        yield server, key


def fuzz(server: RunningServer, headers: dict[str, str]) -> None:
    """Every operation of the server's OpenAPI document, ``EXAMPLES`` generated cases each; all failures listed."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=headers)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @HYPOTHESIS
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, headers=headers)

        try:
            run()
        except Exception as exc:  # one failing operation does not hide the others
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 10  # the document was read, with its routes
    assert not failures, "\n\n".join(failures)
    assert server.process.poll() is None


def test_openapi_without_a_key(open_server: RunningServer) -> None:
    fuzz(open_server, {})


def test_openapi_with_a_key(keyed_server: tuple[RunningServer, str]) -> None:
    server, key = keyed_server
    # both of the document's schemes, so that the fuzzer's own made-up values for them are replaced by the key
    fuzz(server, {"authorization": f"Bearer {key}", "x-api-key": key})


BODY_ROUTES = ["/predict", "/models/iris/predict", "/v2/models/iris/infer", "/v1/models/iris:predict", "/invocations"]


def test_deep_nesting_and_random_bytes(open_server: RunningServer) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    rng = random.Random(4)
    with httpx.Client(base_url=open_server.url, timeout=30) as client:
        for route in BODY_ROUTES:
            r = client.post(route, content=deep, headers={"content-type": "application/json"})
            assert r.status_code == 400, (route, r.status_code, r.text)
            assert "max_json_depth" in r.text
            for size in (1, 100, 10_000, 1_000_000):
                junk = rng.randbytes(size)
                for content_type in ("application/json", "application/octet-stream"):
                    r = client.post(route, content=junk, headers={"content-type": content_type})
                    assert 400 <= r.status_code < 500, (route, size, content_type, r.status_code, r.text)
        # finite values whose sums overflow inside scikit-learn: the fuzzer's first find, a 500 until fixed
        huge = dict.fromkeys(("sepal_length", "sepal_width", "petal_length", "petal_width"), -1.7976931348623155e308)
        r = client.post("/predict", json=[huge, {k: 1.79e308 for k in huge}])
        assert r.status_code == 400, r.text
        # the worker is alive and well
        r = client.post(
            "/predict", json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        )
        assert r.status_code == 200, r.text
    assert open_server.process.poll() is None
    assert "Traceback" not in open_server.log()


def test_deep_nesting_past_orjsons_ceiling_with_a_high_limit(tmp_path: Path) -> None:
    """Even with the depth limit at its maximum, the parser refuses what it cannot take: 400, not a crash."""
    with serve("--max-json-depth", "1024", tmp_dir=tmp_path, timeout=120) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for depth in (1000, 1024, 1025, 100_000):
                body = b"[" * depth + b"]" * depth
                for route in BODY_ROUTES:
                    r = client.post(route, content=body, headers={"content-type": "application/json"})
                    assert 400 <= r.status_code < 500, (route, depth, r.status_code, r.text)
            assert client.get("/v2/health/ready").status_code == 200
        assert "Traceback" not in server.log()
