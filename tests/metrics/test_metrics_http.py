"""GET /metrics and Triton's statistics through the app: what a scrape shows after requests, and who may scrape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from helpers.metrics import matching, parse, value
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IRIS_FEATURES, Echo, IrisClassifier

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
V2 = {
    "inputs": [
        {"name": name, "datatype": "FP64", "shape": [2], "data": [v, v]}
        for name, v in zip(IRIS_FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)
    ]
}


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = create_app([IrisClassifier(), Echo()], Settings(state_dir=tmp_path / "state", **settings))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def scrape(client: TestClient, **headers: str) -> dict:  # type: ignore[type-arg]
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def test_requests_rows_batches_rejections_and_state_after_requests(make: Any) -> None:
    client = make(max_inflight=4)
    for _ in range(3):
        assert client.post("/models/iris/predict", json=[ROW, ROW]).status_code == 200
    assert client.post("/models/iris/predict", json={"nope": 1}).status_code == 400
    assert client.post("/models/missing/predict", json=ROW).status_code == 404
    gate = client.app.state.dataplane.gate  # type: ignore[attr-defined]
    gate.inflight["iris"] = 4  # as if four calls were running: the next is refused
    assert client.post("/models/iris/predict", json=ROW).status_code == 503
    gate.inflight["iris"] = 0
    s = scrape(client)
    labels = {"model": "iris", "version": "1", "protocol": "records"}
    assert value(s, "modelapi_requests_total", **labels, code="2xx") == 3
    assert value(s, "modelapi_requests_total", **labels, code="4xx") == 1
    assert value(s, "modelapi_rows_inferred_total", **labels) == 6
    assert value(s, "modelapi_request_duration_seconds_count", **labels) == 4
    assert sum(matching(s, "modelapi_batches_total", model="iris").values()) >= 1
    assert value(s, "modelapi_batch_rows_sum", model="iris", version="1") == 6
    assert value(s, "modelapi_requests_rejected_total", model="missing", protocol="records", reason="not_found") == 1
    assert value(s, "modelapi_requests_rejected_total", model="iris", protocol="records", reason="overloaded") == 1
    assert value(s, "modelapi_requests_in_flight", model="iris", version="1") == 0
    assert value(s, "modelapi_model_state", model="iris", version="1", state="READY") == 1
    assert value(s, "modelapi_model_state", model="iris", version="1", state="LOADING") == 0
    assert value(s, "modelapi_model_loads_total", model="iris", version="1") == 1
    assert value(s, "modelapi_last_request_timestamp_seconds", model="iris", version="1") > 0  # type: ignore[operator]
    assert matching(s, "modelapi_process_cpu_seconds")  # sampled before the scrape


def test_refusals_before_any_model_are_counted_by_reason(make: Any, tmp_path: Path) -> None:
    """Authentication, rate limit, body size and timeout refusals reach the metrics as well as the model's own."""
    state = tmp_path / "state"
    predict, admin = create_key(state), create_key(state, scope="admin")
    client = make(auth="on", rate_limit=0.001, rate_burst=1, max_body_bytes=2000)
    assert client.post("/models/iris/predict", json=ROW).status_code == 401  # no key
    key = {"Authorization": f"Bearer {predict}"}
    assert client.get("/metrics", headers=key).status_code == 403  # not admin
    big = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [0.0] * 1000}]}
    assert client.post("/v2/models/iris/infer", json=big, headers=key).status_code == 413
    assert client.post("/models/iris/predict", json=ROW, headers=key).status_code == 200
    assert client.post("/models/iris/predict", json=ROW, headers=key).status_code == 429  # the burst is spent
    s = scrape(client, Authorization=f"Bearer {admin}")
    for reason, count in (("unauthenticated", 1), ("forbidden", 1), ("body_size", 1), ("rate_limited", 1)):
        assert value(s, "modelapi_requests_rejected_total", model="", protocol="http", reason=reason) == count


def test_an_inference_timeout_is_counted_as_a_refusal(tmp_path: Path) -> None:
    from toymodels import Sleepy

    settings = Settings(state_dir=tmp_path / "state", inference_timeout_s=0.05, batching=False)
    with TestClient(create_app([Sleepy()], settings), raise_server_exceptions=False) as client:
        assert client.post("/models/sleepy/predict", json={"seconds": 0.5}).status_code == 504
        s = scrape(client)
    assert value(s, "modelapi_requests_rejected_total", model="sleepy", protocol="records", reason="timeout") == 1


def test_no_metrics_counts_nothing(make: Any) -> None:
    client = make(metrics=False)
    assert client.post("/models/iris/predict", json=ROW).status_code == 200
    assert not matching(scrape(client), "modelapi_requests_total")


def test_metrics_needs_the_admin_scope_when_authentication_is_on(make: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    predict, admin = create_key(state), create_key(state, scope="admin")
    client = make(auth="on")
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers={"Authorization": f"Bearer {predict}"})
    assert r.status_code == 403 and "admin scope" in r.text
    assert (
        client.post("/models/iris/predict", json=ROW, headers={"Authorization": f"Bearer {predict}"}).status_code == 200
    )
    s = scrape(client, Authorization=f"Bearer {admin}")
    assert value(s, "modelapi_requests_total", model="iris", version="1", protocol="records", code="2xx") == 1
    # the statistics extension is a V2 route like the others: any key that may use the model
    r = client.get("/v2/models/iris/stats", headers={"Authorization": f"Bearer {predict}"})
    assert r.status_code == 200


def test_open_without_authentication_and_not_on_the_main_port_with_a_metrics_port(make: Any) -> None:
    assert make().get("/metrics").status_code == 200
    assert make(metrics_port=9).get("/metrics").status_code == 404  # served by the metrics listener instead


def test_the_rule_comes_from_the_protocol_registration() -> None:
    from modelapi.protocols import registered

    assert [p.admin_paths for p in registered() if p.admin_paths] == [("/metrics",)]


def test_triton_statistics_shape_and_numbers(make: Any) -> None:
    client = make()
    for _ in range(2):
        assert client.post("/v2/models/iris/infer", json=V2).status_code == 200
    assert client.post("/v2/models/iris/infer", json={"inputs": []}).status_code == 400
    body = client.get("/v2/models/stats").json()
    names = {(m["name"], m["version"]) for m in body["model_stats"]}
    assert names == {("iris", "1"), ("echo", "1")}
    one = client.get("/v2/models/iris/stats").json()
    assert one == client.get("/v2/models/iris/versions/1/stats").json()
    (iris,) = one["model_stats"]
    assert iris["inference_count"] == 4 and iris["execution_count"] >= 1
    stats = iris["inference_stats"]
    assert set(stats) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss",
    }  # fmt: skip
    assert stats["success"]["count"] == 2 and stats["success"]["ns"] > 0
    assert stats["fail"]["count"] == 1
    assert stats["queue"]["count"] == 2 and stats["compute_infer"]["count"] == 2
    assert all(set(d) == {"count", "ns"} and isinstance(d["ns"], int) for d in stats.values())
    assert iris["last_inference"] > 1_600_000_000_000 and iris["batch_stats"] == []
    echo = next(m for m in body["model_stats"] if m["name"] == "echo")
    assert echo["inference_count"] == 0 and echo["inference_stats"]["success"] == {"count": 0, "ns": 0}
    assert client.get("/v2/models/missing/stats").status_code == 404
    r = client.get("/v2/models/iris/versions/7/stats")
    assert r.status_code == 404 and "error" in r.json()
    assert "statistics" in client.get("/v2").json()["extensions"]


def test_the_stats_of_a_limited_key_list_only_its_models(make: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path / "state", models=["echo"])
    client = make(auth="on")
    body = client.get("/v2/models/stats", headers={"Authorization": f"Bearer {key}"}).json()
    assert [m["name"] for m in body["model_stats"]] == ["echo"]
    assert client.get("/v2/models/iris/stats", headers={"Authorization": f"Bearer {key}"}).status_code == 404
