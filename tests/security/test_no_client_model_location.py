"""The server never loads a model from a location a client supplies: no route takes one, and model names in
URLs are looked up among the served models only, never opened as paths."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def everything_on(tmp_path: Path) -> TestClient:
    """Management routes on, authentication off (loopback): the most a client can reach."""
    settings = Settings(management_routes=True, trust_pickle=True, state_dir=tmp_path)
    return TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False)


def test_no_route_loads_or_uploads_a_model(everything_on: TestClient) -> None:
    app: Any = everything_on.app
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    for path in paths:
        lowered = path.lower()
        assert not any(word in lowered for word in ("load", "upload", "repository/models", "register")), path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/{name}/load"),
        ("POST", "/v2/repository/models/{name}/unload"),
        ("POST", "/models/{name}/predict"),
        ("POST", "/v2/models/{name}/infer"),
        ("GET", "/models/{name}"),
        ("POST", "/v1/models/{name}:predict"),
        ("POST", "/models/{name}/jobs"),
    ],
)
def test_a_model_path_in_a_request_is_never_opened(
    everything_on: TestClient, tmp_path: Path, method: str, path: str
) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Exploit(marker)))
    body = {"parameters": {"uri": str(evil), "file": str(evil), "path": str(evil)}, "inputs": []}
    with everything_on as client:
        for name in (str(evil), str(evil).replace("/", "%2F"), "..%2F..%2F" + evil.name, "evil"):
            r = client.request(method, path.format(name=name), json=body)
            assert r.status_code in (400, 404, 405), (name, r.status_code, r.text)
            assert r.status_code < 500
    assert not marker.exists()
    served: Any = client.app
    assert list(served.state.dataplane.models) == ["iris"]
