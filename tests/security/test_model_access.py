"""A key's model list is enforced on every route that names a model, decided from the matched route.

The walk below covers the assembled app's whole route table (every protocol, management routes on), so a
route a new protocol adds with a ``{name}`` parameter is checked without anyone remembering to list it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.http.app import create_app
from modelapi.http.routing import names_model
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier


class CountingEcho(Echo):
    """Echo that counts its predictions, to prove no model code ran for a refused request."""

    calls = 0

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        CountingEcho.calls += 1
        return super().predict(inputs)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(state_dir=tmp_path, auth="on", management_routes=True, job_workers=0)
    app = create_app([IrisClassifier(), CountingEcho()], settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _fill(path: str, name: str) -> str:
    """A route's path with ``name`` for ``{name}`` and a plausible value for every other parameter."""
    path = re.sub(r"\{name(:[^}]*)?\}", name, path)
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_that_names_a_model_refuses_a_model_outside_the_key(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = create_key(tmp_path, scope="admin", models=["iris"])
    headers = {"Authorization": f"Bearer {key}"}
    repository = client.app.state.dataplane.repository  # type: ignore[attr-defined]
    touched: list[str] = []

    async def refuse(name: str) -> None:
        touched.append(name)

    monkeypatch.setattr(repository, "load_model", refuse)
    monkeypatch.setattr(repository, "unload_model", refuse)
    CountingEcho.calls = 0
    routes = [r for r in client.app.routes if isinstance(r, Route) and names_model(r)]  # type: ignore[attr-defined]
    assert len(routes) >= 20  # records, V1, V2, the repository extension, MLflow, jobs
    for route in routes:
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            for name in ("echo", "nosuch"):
                r = client.request(method, _fill(route.path, name), headers=headers, json={})
                assert r.status_code == 404, (method, route.path, r.text)
                assert f"no model named '{name}'" in r.text and "iris" not in r.text, (route.path, r.text)
    assert CountingEcho.calls == 0 and touched == []


def test_a_key_for_the_model_gets_through(client: TestClient, tmp_path: Path) -> None:
    key = create_key(tmp_path, models=["echo"])
    r = client.get("/v2/models/echo/ready", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json() == {"name": "echo", "ready": True}


def test_predict_without_a_name_checks_the_only_model(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, auth="on", job_workers=0)
    with TestClient(create_app([CountingEcho()], settings), raise_server_exceptions=False) as c:
        key = create_key(tmp_path, models=["iris"])
        CountingEcho.calls = 0
        for path in ("/predict", "/invocations"):
            r = c.post(path, json={}, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 404 and "echo" not in r.text, (path, r.text)
        assert CountingEcho.calls == 0
