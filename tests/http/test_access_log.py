"""The access log and request context in process: one line per request with its numbers, the request id (and
model) on every record written while it is served, keys never in any line, genuine 500s still at ERROR."""

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
from modelapi import logs
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier, Regressor

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Captured:
    def __init__(self, log_format: str) -> None:
        self.stream = io.StringIO()
        self.handler = logs.make_handler(log_format, self.stream)

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[Captured]:
    cap = Captured(getattr(request, "param", "json"))
    root = logging.getLogger()
    logger = logging.getLogger("modelapi")
    level, root_level = logger.level, root.level
    root.addHandler(cap.handler)
    # other libraries' INFO records (httpx's request lines) stay out whatever an earlier test left the root at
    root.setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    try:
        yield cap
    finally:
        root.removeHandler(cap.handler)
        root.setLevel(root_level)
        logger.setLevel(level)


def test_one_access_line_per_request_with_its_numbers(captured: Captured) -> None:
    with TestClient(create_app([IrisClassifier()], Settings()), raise_server_exceptions=False) as client:
        ok = client.post("/models/iris/predict?verbose=1", json=ROW, headers={"x-request-id": "my-id-1"})
        missing = client.get("/nope")
    assert ok.status_code == 200 and missing.status_code == 404
    access = [x for x in captured.lines() if x["logger"] == "modelapi.access"]
    assert len(access) == 2
    first, second = access
    assert first["request_id"] == "my-id-1" == ok.headers["x-request-id"]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/models/iris/predict?verbose=1", 200)
    assert first["bytes"] == len(ok.content) and first["duration_ms"] >= 0 and first["client"]
    assert first["model"] == "iris" and first["level"] == "INFO"
    assert second["request_id"] == missing.headers["x-request-id"]
    assert (second["path"], second["status"], second["bytes"]) == ("/nope", 404, len(missing.content))
    assert "model" not in second


def test_no_access_line_when_the_level_hides_it(captured: Captured) -> None:
    logging.getLogger("modelapi").setLevel(logging.WARNING)
    with TestClient(create_app([IrisClassifier()], Settings())) as client:
        assert client.post("/predict", json=ROW).status_code == 200
    assert captured.text() == ""


def test_a_500_is_still_an_error_with_its_traceback_and_request_id(captured: Captured) -> None:
    with TestClient(create_app([Regressor()], Settings()), raise_server_exceptions=False) as client:
        r = client.post("/models/regressor/predict", json={"a": -999, "b": 1})
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    errors = [x for x in captured.lines() if x["level"] == "ERROR"]
    assert errors and all(x["request_id"] == rid for x in errors)
    assert any("RuntimeError: secret internal detail" in x.get("exception", "") for x in errors)
    assert all(x["model"] == "regressor" for x in errors)


@pytest.mark.parametrize("captured", ["text", "json"], indirect=True)
def test_keys_and_authorization_are_never_logged(captured: Captured, tmp_path: Path) -> None:
    key = create_key(tmp_path)
    secret = key.rsplit("_", 1)[1]
    wrong = "mk_0badc0de_" + "f" * 64
    settings = Settings(auth="on", state_dir=tmp_path)
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        assert client.post("/predict", json=ROW, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.post("/predict", json=ROW, headers={"X-API-Key": key}).status_code == 200
        assert client.post("/predict", json=ROW, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.post("/predict", json=ROW, headers={"X-API-Key": wrong}).status_code == 401
        assert client.get(f"/models?api_key={key}").status_code == 401
        assert client.get(f"/models?api_key={key.replace('_', '%5F')}").status_code == 401
        assert client.get(f"/models/{key}").status_code in (401, 404)
    text = captured.text()
    assert text.count("modelapi.access") == 7
    assert secret not in text and "f" * 64 not in text
    assert "Bearer" not in text and "mk_0123" not in text
    assert f"{key.rsplit('_', 1)[0]}_<redacted>" in text  # the key id stays, for searching the log


def test_the_access_record_is_the_one_make_record_makes() -> None:
    """The record from the prototype (http/access.py) holds every field ``Logger.makeRecord`` would give it."""
    from modelapi.http import access

    args = ("127.0.0.1:1", "POST", "/predict", "1.1", 200, 10, 1.5, "rid")
    extra = {"method": "POST", "status": 200, "request_id": "rid"}
    for _ in range(2):  # the first makes the prototype, the second copies it
        fast = access._PROTOTYPE.record(args, extra)
        made = access.ACCESS_LOG.makeRecord(
            access.ACCESS_LOG.name, logging.INFO, access.__file__, access._LINENO, access._FORMAT, args, None,
            access._FUNC, extra,
        )  # fmt: skip
        mine, theirs = dict(fast.__dict__), dict(made.__dict__)
        for key in ("created", "msecs", "relativeCreated"):
            assert abs(mine.pop(key) - theirs.pop(key)) < 1000  # both from the clock, a moment apart
        assert mine == theirs
        assert fast.getMessage() == made.getMessage()


def test_the_access_record_names_its_own_task() -> None:
    """From Python 3.12 a record carries the asyncio task that logged it (``taskName``): each line names its own
    request's task, not the one whose line made the prototype (on 3.11 records have no such field)."""
    import asyncio

    from modelapi.http import access

    args = ("127.0.0.1:1", "POST", "/predict", "1.1", 200, 10, 1.5, "rid")

    async def line() -> tuple[Any, Any]:
        made = access.ACCESS_LOG.makeRecord(
            access.ACCESS_LOG.name, logging.INFO, access.__file__, access._LINENO, access._FORMAT, args, None,
            access._FUNC,
        )  # fmt: skip
        return getattr(access._PROTOTYPE.record(args, {}), "taskName", None), getattr(made, "taskName", None)

    async def main() -> list[tuple[Any, Any]]:
        return [await asyncio.create_task(line(), name=f"request-{i}") for i in range(2)]

    for mine, theirs in asyncio.run(main()):
        assert mine == theirs
