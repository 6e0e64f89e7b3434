"""Readiness around the app: 503 while the models load, 200 once they have, 503 again while draining."""

from __future__ import annotations

import threading
import time

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from modelapi.errors import ModelLoadError
from modelapi.http.app import create_app
from modelapi.http.lifecycle import Lifecycle
from toymodels import Regressor

ROW = {"a": 2.0, "b": 1.0}


def _wait_ready(client: TestClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "never turned ready"
        time.sleep(0.01)


def test_not_ready_while_the_models_load_then_ready() -> None:
    release = threading.Event()
    ready: list[Starlette] = []

    def build() -> Starlette:
        assert release.wait(10)
        return create_app([Regressor()])

    gate = Lifecycle(build, on_ready=ready.append)
    with TestClient(gate) as client:
        gate.listening()
        r = client.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (503, {"ready": False})
        assert r.headers["cache-control"] == "no-store"
        assert client.get("/v2/health/live").status_code == 200
        r = client.post("/predict", json=ROW)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "loading" in r.json()["detail"]
        r = client.post("/v2/models/regressor/infer", json={"inputs": []})
        assert r.status_code == 503
        assert "error" in r.json()
        assert not ready

        release.set()
        _wait_ready(client)
        assert len(ready) == 1
        r = client.post("/predict", json=ROW)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == pytest.approx(3.0)


def test_draining_reports_not_ready_but_still_serves_requests_that_arrive() -> None:
    gate = Lifecycle(lambda: create_app([Regressor()]))
    with TestClient(gate) as client:
        gate.listening()
        _wait_ready(client)
        gate.drain()
        r = client.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (503, {"ready": False})
        assert client.get("/v2/health/live").status_code == 200
        assert client.post("/predict", json=ROW).status_code == 200


def test_the_apps_own_lifespan_runs_inside() -> None:
    app = create_app([Regressor()])
    dataplane = app.state.dataplane
    gate = Lifecycle(lambda: app)
    with TestClient(gate) as client:
        gate.listening()
        _wait_ready(client)
        assert dataplane.ready
    assert not dataplane.live  # the app's shutdown ran


def test_not_ready_until_every_worker_is() -> None:
    cluster = [False]
    gate = Lifecycle(lambda: create_app([Regressor()]), cluster_ready=lambda: cluster[0])
    with TestClient(gate) as client:
        gate.listening()
        deadline = time.monotonic() + 10
        while gate.state != "serving":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/v2/health/ready").status_code == 503
        assert client.post("/predict", json=ROW).status_code == 200  # this worker can serve already
        cluster[0] = True
        assert client.get("/v2/health/ready").status_code == 200


def test_a_model_that_cannot_load_is_reported_and_answers_503() -> None:
    failures: list[BaseException] = []

    def build() -> Starlette:
        raise ModelLoadError("no such model file: x.onnx")

    gate = Lifecycle(build, on_failed=failures.append)
    with TestClient(gate) as client:
        deadline = time.monotonic() + 10
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert gate.state == "failed"
        assert isinstance(gate.error, ModelLoadError)
        assert client.get("/v2/health/ready").status_code == 503
        assert "failed" in client.post("/predict", json=ROW).json()["detail"]


def test_without_background_startup_the_server_waits_for_the_models() -> None:
    gate = Lifecycle(lambda: create_app([Regressor()]), background_startup=False)
    with TestClient(gate) as client:  # startup returns only once the app has started
        assert gate.state == "serving"
        gate.listening()
        assert client.get("/v2/health/ready").status_code == 200

    def build() -> Starlette:
        raise ModelLoadError("broken")

    failing = Lifecycle(build, background_startup=False)
    with pytest.raises(ModelLoadError, match="broken"), TestClient(failing):
        pass


def test_health_gives_the_main_ports_answers_in_every_state() -> None:
    """``Lifecycle.health`` (the operations port's answers) against what the main port answers, state by state."""
    release = threading.Event()
    cluster = [True]

    def build() -> Starlette:
        assert release.wait(10)
        return create_app([Regressor()])

    gate = Lifecycle(build, cluster_ready=lambda: cluster[0])

    def same() -> None:
        for path in ("/v2/health/live", "/v2/health/ready"):
            r = client.get(path)
            assert gate.health(path) == (r.status_code, r.json()), (gate.state, path)

    with TestClient(gate) as client:
        gate.listening()
        same()  # loading
        assert gate.health("/v2/health/ready") == (503, {"ready": False})
        release.set()
        _wait_ready(client)
        same()  # serving
        assert gate.health("/v2/health/ready") == (200, {"ready": True})
        cluster[0] = False
        same()  # another worker not ready
        cluster[0] = True
        gate.drain()
        same()  # draining
        assert gate.health("/v2/health/ready") == (503, {"ready": False})
        assert gate.health("/v2/health/live") == (200, {"live": True})
        assert gate.health("/predict") is None
        assert gate.health("/metrics") is None


def test_health_of_a_server_that_failed_to_start() -> None:
    def build() -> Starlette:
        raise ModelLoadError("broken")

    gate = Lifecycle(build)
    with TestClient(gate) as client:
        deadline = time.monotonic() + 10
        while gate.state != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for path in ("/v2/health/live", "/v2/health/ready"):
            r = client.get(path)
            assert gate.health(path) == (r.status_code, r.json())


def test_health_says_live_while_the_app_shuts_down_after_the_drain() -> None:
    """The operations port outlasts the drain: it still answers while the app's own shutdown runs (which closes the
    data plane) and, with several workers, while the others drain. The process answers, so liveness is 200 there,
    as it was while draining; a 503 would count toward a liveness probe's restart of a server stopping cleanly."""
    gate = Lifecycle(lambda: create_app([Regressor()]))
    with TestClient(gate) as client:
        gate.listening()
        _wait_ready(client)
        gate.drain()
        assert gate.health("/v2/health/live") == (200, {"live": True})
    # the lifespan's shutdown has run: the app has stopped, the server has not yet
    assert gate.health("/v2/health/ready") == (503, {"ready": False})
    assert gate.health("/v2/health/live") == (200, {"live": True})
