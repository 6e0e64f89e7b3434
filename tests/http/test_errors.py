"""Error answers (``http/errors.py``): an error the data plane raised while a call held its version names that
version in a ``Model-Version`` header, as a prediction does; one raised before a version was chosen names none.

The setup is the one a canary makes hard to read: model ``m`` whose stable version 1 takes one feature ``x`` and
whose canary, version 2, takes a three-feature ``input``, with half the unversioned calls diverted to it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from helpers.model_repo import model_bytes
from helpers.repo import ModelRepo, skops_bytes
from modelapi import logs
from modelapi.http.app import create_app
from modelapi.settings import Settings

CANARY = 'version_policy = "all"\ncanary_percent = 50\n[labels]\nstable = 1\ncanary = 2\n'
STABLE_ROW = {"x": 0.0}  # version 1's inputs; version 2 refuses them (400)
TRIES = 200  # unversioned calls: each goes to the canary with probability 1/2, so both versions answer


def canary_app(tmp_path: Path, **settings: Any) -> TestClient:
    repo = ModelRepo(tmp_path / "models")
    repo.version("m", 1, model_bytes(1))
    repo.version("m", 2, skops_bytes("v2"))
    repo.toml("m", CANARY)
    return TestClient(
        create_app(None, Settings(models=[str(repo.root)], job_workers=0, **settings)), raise_server_exceptions=False
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with canary_app(tmp_path, max_rows=2) as c:
        yield c


def test_a_canary_that_refuses_the_stable_versions_inputs_names_itself(client: TestClient) -> None:
    seen: dict[int, set[str]] = {}
    for _ in range(TRIES):
        r = client.post("/models/m/predict", json=STABLE_ROW)
        seen.setdefault(r.status_code, set()).add(r.headers.get("model-version", "-"))
        if r.status_code == 400:
            assert r.headers["content-type"] == "application/problem+json"
            assert "input" in r.json()["detail"], r.text
    # the stable version answers, the canary refuses: each answer names the version that gave it
    assert seen == {200: {"1"}, 400: {"2"}}, seen


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/models/m/versions/2/predict", STABLE_ROW),
        ("/models/m/labels/canary/predict", STABLE_ROW),
        ("/v1/models/m/versions/2:predict", {"instances": [STABLE_ROW]}),
        ("/v1/models/m/labels/canary:predict", {"instances": [STABLE_ROW]}),
        (
            "/v2/models/m/versions/2/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.0]}]},
        ),
    ],
)
def test_every_protocol_names_the_version_that_refused(client: TestClient, path: str, body: Any) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.headers["model-version"] == "2", (r.status_code, r.headers, r.text)


def test_a_row_limit_413_names_the_version(client: TestClient) -> None:
    r = client.post("/models/m/versions/1/predict", json=[STABLE_ROW] * 3)  # over the server's max_rows = 2
    assert r.status_code == 413 and r.headers["model-version"] == "1", r.text
    r = client.post("/v1/models/m/versions/2:predict", json={"instances": [[0.0, 0.0, 0.0]] * 3})
    assert r.status_code == 413 and r.headers["model-version"] == "2", r.text


def test_errors_before_a_version_is_chosen_name_none(client: TestClient) -> None:
    for path in ("/models/nope/predict", "/models/m/versions/7/predict", "/models/m/labels/beta/predict"):
        r = client.post(path, json=STABLE_ROW)
        assert r.status_code == 404 and "model-version" not in r.headers, (path, r.headers)
    r = client.post("/models/m/versions/1/predict", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "model-version" not in r.headers  # the body failed before the call held v1
    r = client.post("/models/m/versions/1/predict", content=b"x=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "model-version" not in r.headers  # refused on the head


@pytest.mark.parametrize(
    "path",
    [
        "/models/m/versions/1/predict",
        "/v1/models/m/versions/1:predict",
        "/v2/models/m/versions/1/infer",
        "/models/m/invocations",  # MLflow: the default version
    ],
)
def test_a_body_that_is_not_json_or_of_another_type_names_no_version_on_any_protocol(
    client: TestClient, path: str
) -> None:
    """The request's own fault, before a version is asked: the same answer on every protocol (V2 parsed its body
    inside the call, and MLflow refused the content type there, so both once named the version)."""
    r = client.post(path, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "model-version" not in r.headers, (r.headers, r.text)
    r = client.post(path, content=b"x=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "model-version" not in r.headers, (r.headers, r.text)
    # the same body as JSON the version cannot take still names it (MLflow's route has no version in its path:
    # the canary takes half of its calls)
    r = client.post(path, content=b"[1, 2]", headers={"content-type": "application/json"})
    named = {"1"} if "/versions/1" in path else {"1", "2"}
    assert r.status_code == 400 and r.headers.get("model-version") in named, (r.headers, r.text)


@pytest.mark.parametrize(
    "path",
    ["/models/nosuch/predict", "/v1/models/nosuch:predict", "/v2/models/nosuch/infer", "/models/nosuch/invocations"],
)
def test_a_content_type_the_route_does_not_take_is_refused_before_the_model_is_looked_up(
    client: TestClient, path: str
) -> None:
    """A 415 is refused on the request's head, before admission, on every protocol alike: MLflow's refused it
    inside the admission, so an unknown model answered 404 there (and an overloaded one 503) where the other
    protocols answer 415."""
    r = client.post(path, content=b"x=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "model-version" not in r.headers, (r.status_code, r.text)


def test_a_key_refused_names_no_version(tmp_path: Path) -> None:
    key = create_key(tmp_path)
    with canary_app(tmp_path, auth="on", state_dir=tmp_path) as client:
        r = client.post("/models/m/versions/2/predict", json=STABLE_ROW)
        assert r.status_code == 401 and "model-version" not in r.headers
        r = client.post("/models/m/versions/2/predict", json=STABLE_ROW, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 400 and r.headers["model-version"] == "2", r.text


def test_a_key_over_its_row_quota_names_no_version(tmp_path: Path) -> None:
    """The key's row quota is checked once the rows are known, inside the call: its 429 is the key's limit, not
    the version's refusal (and the rejection is counted without a model), so it names no version."""
    key = create_key(tmp_path, limits=("1rows/min",))
    bearer = {"authorization": f"Bearer {key}"}
    with canary_app(tmp_path, auth="on", state_dir=tmp_path) as client:
        r = client.post("/models/m/versions/1/predict", json=[STABLE_ROW, STABLE_ROW], headers=bearer)
        assert r.status_code == 429 and "rows" in r.json()["detail"], r.text
        assert "model-version" not in r.headers


def test_the_request_log_names_the_version_that_refused(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root, logger = logging.getLogger(), logging.getLogger("modelapi")
    level, root_level = logger.level, root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    try:
        with canary_app(tmp_path) as client:
            assert client.post("/models/m/labels/canary/predict", json=STABLE_ROW).status_code == 400
            assert client.post("/models/m/labels/stable/predict", json=STABLE_ROW).status_code == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    refused, ok = [line for line in lines if line["logger"] == "modelapi.access"]
    assert (refused["status"], refused["model"], refused.get("version")) == (400, "m", "2")
    assert (ok["status"], ok.get("version")) == (200, None)  # a success's version is in its header
