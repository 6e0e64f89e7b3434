"""The server never loads a model from a location a client supplies: no route takes one, and model names in
URLs are looked up among the served models only, never opened as paths."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from helpers.keys import create_key
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


#: the V2 repository extension loads and unloads models by name, from the repository directory only
_BY_NAME = {"/v2/repository/models/{name}/load", "/v2/repository/models/{name}/unload"}


def test_no_route_uploads_a_model_and_only_the_repository_extension_loads_one(everything_on: TestClient) -> None:
    app: Any = everything_on.app
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    assert paths >= _BY_NAME
    for path in paths - _BY_NAME:
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
            # 403: loading needs an admin key, even on loopback
            assert r.status_code in (400, 403, 404, 405), (name, r.status_code, r.text)
        served: Any = client.app
        assert served.state.dataplane.repository.names() == ["iris"]
    assert not marker.exists()


def test_an_admin_cannot_load_a_file_a_request_names(tmp_path: Path) -> None:
    """Triton's ``file:`` parameters upload a model's content: refused (an uploaded pickle runs code)."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Exploit(marker)))
    key = create_key(tmp_path, scope="admin")
    settings = Settings(management_routes=True, trust_pickle=True, state_dir=tmp_path)
    headers = {"authorization": f"Bearer {key}"}
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        for params in ({"file:1/model.pkl": evil.read_bytes().hex()}, {"config": "{}"}, {"uri": str(evil)}):
            r = client.post("/v2/repository/models/iris/load", json={"parameters": params}, headers=headers)
            assert r.status_code == 400, r.text
            assert "not supported" in r.json()["error"]
        r = client.post("/v2/repository/models/evil/load", headers=headers)
        assert r.status_code == 404 and str(tmp_path) not in r.text
    assert not marker.exists()
