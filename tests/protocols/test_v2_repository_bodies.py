"""The V2 repository extension's bodies: ``parameters`` is an object (absent or null: none), ``ready`` and
``unload_dependents`` are booleans; anything else is 400 naming the field and the type it needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(state_dir=tmp_path, auth="on", management_routes=True, job_workers=0)
    with TestClient(create_app([IrisClassifier(), Echo()], settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {create_key(tmp_path, scope='admin')}"
        yield client


NOT_OBJECTS: list[Any] = [[], 0, 1.5, "", "x", False, True]
NOT_BOOLEANS: list[Any] = [None, 0, 1, "true", "", [], {}]


def test_parameters_that_are_not_an_object_are_400(admin: TestClient) -> None:
    for action in ("load", "unload"):
        for parameters in NOT_OBJECTS:
            r = admin.post(f"/v2/repository/models/iris/{action}", json={"parameters": parameters})
            assert r.status_code == 400, (action, parameters, r.text)
            assert "parameters: must be a JSON object" in r.json()["error"]
    assert admin.get("/v2/models/iris/ready").status_code == 200  # nothing was unloaded


def test_absent_or_null_parameters_are_none(admin: TestClient) -> None:
    for body in (None, {}, {"parameters": None}, {"parameters": {}}):
        assert admin.post("/v2/repository/models/iris/load", json=body).status_code == 200, body
        assert admin.post("/v2/repository/models/echo/unload", json=body).status_code == 200, body


def test_unload_dependents_must_be_a_boolean(admin: TestClient) -> None:
    for value in NOT_BOOLEANS:
        r = admin.post("/v2/repository/models/echo/unload", json={"parameters": {"unload_dependents": value}})
        assert r.status_code == 400, (value, r.text)
        assert "parameters.unload_dependents: must be a boolean" in r.json()["error"]
    for flag in (True, False):
        r = admin.post("/v2/repository/models/echo/unload", json={"parameters": {"unload_dependents": flag}})
        assert r.status_code == 200, r.text


def test_index_ready_must_be_a_boolean(admin: TestClient) -> None:
    for value in NOT_BOOLEANS:
        r = admin.post("/v2/repository/index", json={"ready": value})
        assert r.status_code == 400, (value, r.text)
        assert "ready: must be a boolean" in r.json()["error"]


def test_index_ready(admin: TestClient) -> None:
    assert admin.post("/v2/repository/models/echo/unload").status_code == 200
    every = admin.post("/v2/repository/index", json={}).json()
    assert {row["name"] for row in every} == {"iris", "echo"}
    assert admin.post("/v2/repository/index", json={"ready": False}).json() == every
    assert [row["name"] for row in admin.post("/v2/repository/index", json={"ready": True}).json()] == ["iris"]
