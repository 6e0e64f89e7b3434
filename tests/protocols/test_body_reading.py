"""Calls are admitted on the request's head, bodies read after, and decoded within the called version's limits.

A request whose body is still arriving holds its in-flight slot but no model version: with ``max_inflight=1``
another request is refused before its body is read. A model.toml ``max_rows`` is the limit for that model, above
or below the server's ``--max-rows``, in every protocol's decoder.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from helpers.repo import EventLog, ModelRepo, skops_bytes
from modelapi.events import RequestFinished, RequestStarted
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier

IRIS_RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_V2 = {
    "inputs": [{"name": name, "datatype": "FP64", "shape": [1], "data": [value]} for name, value in IRIS_RECORD.items()]
}

#: (path, content type, complete body) for the iris model, one per protocol
REQUESTS = [
    ("/models/iris/predict", "application/json", orjson.dumps(IRIS_RECORD)),
    ("/v1/models/iris:predict", "application/json", orjson.dumps({"instances": [IRIS_RECORD]})),
    ("/v2/models/iris/infer", "application/json", orjson.dumps(IRIS_V2)),
    ("/invocations", "application/json", orjson.dumps({"dataframe_records": [IRIS_RECORD]})),
    ("/invocations", "text/csv", (",".join(IRIS_RECORD) + "\n" + ",".join(map(str, IRIS_RECORD.values()))).encode()),
]


async def _call(app: Any, path: str, content_type: str, receive: Any) -> list[Message]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", content_type.encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _status(sent: list[Message]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize(("path", "content_type", "body"), REQUESTS, ids=[f"{p} {t}" for p, t, _ in REQUESTS])
def test_admission_is_on_the_head_and_a_body_still_arriving_holds_no_version(
    path: str, content_type: str, body: bytes
) -> None:
    """The slot is taken on the head: with ``max_inflight=1`` a second request is refused (503, Retry-After)
    without a byte of its body read; the version is held only once the body is in."""
    app = create_app([IrisClassifier()], Settings(max_inflight=1, batching=False, job_workers=0))
    dp = app.state.dataplane
    gate = dp.gate

    async def main() -> None:
        async with app.router.lifespan_context(app):
            rest = asyncio.Event()
            parts = [(body[:5], True), (body[5:], False)]

            async def slow_receive() -> Message:  # the first bytes, then the rest only when the test says so
                if len(parts) == 1:
                    await rest.wait()
                if not parts:
                    await asyncio.Event().wait()  # no disconnect before the answer
                chunk, more = parts.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": more}

            slow = asyncio.create_task(_call(app, path, content_type, slow_receive))
            await asyncio.sleep(0.1)
            assert not slow.done() and gate.inflight == {"iris": 1}
            assert dp.resolve("iris").inflight == 0  # no version held while the body arrives

            reads = 0

            async def receive() -> Message:
                nonlocal reads
                reads += 1
                return {"type": "http.request", "body": body, "more_body": False}

            sent = await _call(app, path, content_type, receive)
            assert _status(sent) == 503, sent
            start = next(m for m in sent if m["type"] == "http.response.start")
            assert (b"retry-after", b"1") in start["headers"]
            assert reads == 0  # refused on the head
            rest.set()
            assert _status(await asyncio.wait_for(slow, 10)) == 200
            assert gate.inflight == {}

    asyncio.run(main())


def test_a_client_gone_mid_body_is_not_counted_against_the_model(caplog: pytest.LogCaptureFixture) -> None:
    """The version is held once the body is in: a disconnect while it arrives is no request to the model (and no 500
    in its statistics, no answer sent, no error logged); nothing is left in flight."""
    app = create_app([IrisClassifier()], Settings(max_inflight=1, batching=False, job_workers=0))
    log = EventLog()
    app.state.dataplane.events.subscribe(log)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            messages = iter([{"type": "http.request", "body": b'{"sepal', "more_body": True}])

            async def receive() -> Message:
                return next(messages, {"type": "http.disconnect"})  # type: ignore[arg-type]

            sent = await _call(app, "/models/iris/predict", "application/json", receive)
            assert sent == []  # nobody to answer
            assert app.state.dataplane.gate.inflight == {}

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert log.of(RequestStarted) == [] and log.of(RequestFinished) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "disconnected before its body arrived" in caplog.text


# the called version's max_rows ---------------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    """Model ``big`` (model.toml ``max_rows = 5``) and ``small`` (``max_rows = 1``) on a server whose limit is 2."""
    repo = ModelRepo(tmp_path / "models")
    for name, limit in (("big", 5), ("small", 1)):
        repo.version(name, 1, skops_bytes(name))
        repo.toml(name, f"max_rows = {limit}\n")
    settings = Settings(models=[str(repo.root)], max_rows=2, job_workers=0)
    with TestClient(create_app(None, settings), raise_server_exceptions=False) as client:
        yield client


def _bodies(name: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    rows = [[0.0, 0.0, 0.0]] * n
    return [
        (f"/models/{name}/predict", {"json": [{"input": row} for row in rows]}),
        (f"/v1/models/{name}:predict", {"json": {"instances": rows}}),
        (f"/models/{name}/invocations", {"json": {"inputs": {"input": rows}}}),
        (
            f"/v2/models/{name}/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "input", "datatype": "FP64", "shape": [n, 3], "data": [x for row in rows for x in row]}
                    ]
                }
            },
        ),
    ]


def test_a_model_toml_max_rows_above_the_servers_is_the_limit(limited: TestClient) -> None:
    for path, kwargs in _bodies("big", 4):
        r = limited.post(path, **kwargs)
        assert r.status_code == 200, (path, r.text)
    for path, kwargs in _bodies("big", 6):
        r = limited.post(path, **kwargs)
        assert r.status_code == 413 and "5" in r.text, (path, r.text)


def test_a_model_toml_max_rows_below_the_servers_is_the_limit(limited: TestClient) -> None:
    for path, kwargs in _bodies("small", 2):
        r = limited.post(path, **kwargs)
        assert r.status_code == 413, (path, r.text)
    assert limited.post("/models/small/predict", json={"input": [0.0, 0.0, 0.0]}).status_code == 200
