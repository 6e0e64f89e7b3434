"""Traces with the SDK's in-memory exporter: the server span and its children, a continued traceparent, one
predict span per batch linked to every request it served, job chunks, and nothing at all with tracing off."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping

import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from modelapi import tracing
from modelapi.http.app import create_app
from modelapi.logs import JsonFormatter, make_handler
from modelapi.models.base import Model
from modelapi.settings import Settings
from modelapi.signature import Signature, TensorSpec

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Doubler(Model):
    """y = 2x; holds a call with x = -1 until released, so the requests behind it queue up and batch."""

    signature = Signature.from_features({"x": "FP64"}, outputs=[TensorSpec("y", "FP64")])

    def __init__(self) -> None:
        self.name = "doubler"
        self.started = threading.Event()
        self.release = threading.Event()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = inputs["x"]
        if (x == -1).any():
            self.started.set()
            assert self.release.wait(10)
        return {"y": 2 * x}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def _settings(**kwargs: object) -> Settings:
    return Settings(auth="off", metrics=False, **kwargs)  # type: ignore[arg-type]


def _by_name(finished: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def test_one_request_has_a_server_span_with_decode_queue_predict_encode_children(
    spans: InMemorySpanExporter,
) -> None:
    with TestClient(create_app([Doubler()], _settings())) as client:
        spans.clear()  # the warm-up ran outside any request
        r = client.post("/v2/models/doubler/infer", json={"inputs": [_x([1.0, 2.0])]})
        assert r.status_code == 200
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.name == "POST /v2/models/{name}/infer"
    attrs = server.attributes or {}
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.route"] == "/v2/models/{name}/infer"
    assert attrs["http.response.status_code"] == 200
    assert attrs[tracing.MODEL] == "doubler" and attrs[tracing.VERSION] == "1" and attrs[tracing.PROTOCOL] == "v2"
    assert attrs["modelapi.request_id"] == r.headers["x-request-id"]
    trace_id = server.context.trace_id
    assert r.headers["traceresponse"].split("-")[1] == f"{trace_id:032x}"
    for name in ("decode", "queue", "predict", "encode"):
        (child,) = _by_name(finished, name)
        assert child.context.trace_id == trace_id, name
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time, name  # type: ignore[operator]
    (predict,) = _by_name(finished, "predict")
    assert (predict.attributes or {})["modelapi.batch.rows"] == 2
    assert [link.context.span_id for link in predict.links] == [server.context.span_id]


def test_an_incoming_traceparent_is_continued_and_logs_carry_the_trace_id(spans: InMemorySpanExporter) -> None:
    stream = _Lines()
    handler = make_handler("json", stream)  # type: ignore[arg-type]
    assert isinstance(handler.formatter, JsonFormatter)
    access = logging.getLogger("modelapi.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        with TestClient(create_app([Doubler()], _settings())) as client:
            spans.clear()
            r = client.post("/predict", json={"x": 3.0}, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert r.status_code == 200, r.text
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.name == "POST /predict"
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_ID and server.parent.is_remote
    assert {s.name for s in finished if f"{s.context.trace_id:032x}" == TRACE_ID} >= {"decode", "predict", "encode"}
    lines = [json.loads(line) for line in stream.lines if line.strip()]
    assert any(line.get("trace_id") == TRACE_ID and line["logger"] == "modelapi.access" for line in lines), lines


def test_requests_batched_together_make_one_predict_span_linked_to_each(spans: InMemorySpanExporter) -> None:
    model = Doubler()

    async def run() -> list[httpx.Response]:
        app = create_app([model], _settings())
        dp = app.state.dataplane
        await dp.start()  # ASGITransport runs no lifespan
        spans.clear()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.ensure_future(client.post("/predict", json={"x": -1.0}))
            while not model.started.is_set():
                await asyncio.sleep(0.001)
            rest = [asyncio.ensure_future(client.post("/predict", json={"x": float(i)})) for i in range(5)]
            batcher = dp.resolve("doubler").batcher
            for _ in range(5000):
                if batcher.waiting == 5:
                    break
                await asyncio.sleep(0.001)
            model.release.set()
            responses = await asyncio.gather(first, *rest)
        await dp.close()
        return list(responses)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(servers) == 6
    assert len({s.context.trace_id for s in servers}) == 6  # six traces, one per request
    predicts = _by_name(finished, "predict")
    assert len(predicts) == 2  # the held request alone, then the other five in one batch
    batch = max(predicts, key=lambda s: len(s.links))
    assert (batch.attributes or {})["modelapi.batch.requests"] == 5
    linked = {link.context.span_id for link in batch.links}
    later = {s.context.span_id for s in servers} - {predicts[0].parent.span_id}  # type: ignore[union-attr]
    assert linked == later
    assert batch.parent is not None and batch.parent.span_id in linked  # a child of the oldest request it served
    assert len(_by_name(finished, "queue")) == 6
    assert all(s.parent is not None for s in _by_name(finished, "queue"))


def test_settings_decide_whether_tracing_is_on() -> None:
    assert not tracing.wanted(Settings())
    assert tracing.wanted(Settings(otel_traces_exporter="otlp"))
    assert tracing.wanted(Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318"))
    assert not tracing.wanted(Settings(otel_traces_exporter="none", otel_exporter_otlp_endpoint="http://x"))
    assert not tracing.wanted(Settings(otel_traces_exporter="otlp", tracing="off"))
    assert not tracing.wanted(Settings(otel_traces_exporter="otlp", otel_sdk_disabled=True))
    assert tracing.wanted(Settings(tracing="on"))


def test_an_exporter_not_installed_stops_the_server_with_one_line_naming_it() -> None:
    """A settings mistake, as a bad flag is: ``modelapi: error: ...`` and status 2, not a traceback logged and
    raised again (status 1); the models are never loaded."""
    with pytest.raises(ValueError, match="no span exporter named 'bogus' is installed"):
        tracing.configure(Settings(otel_traces_exporter="bogus"))
    assert not tracing.ON

    from pathlib import Path

    here = Path(__file__).parent
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_TRACES_EXPORTER": "otlp,bogus", "PYTHONPATH": f"{Path(tracing.__file__).parents[1]}:{here}"}
    command = [sys.executable, "-m", "modelapi", "serve", "toymodels:Echo", "--port", "0", "--log-format", "text"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "modelapi: error: OTEL_TRACES_EXPORTER: no span exporter named 'bogus' is installed\n"


def test_tracing_off_records_nothing_and_imports_no_opentelemetry() -> None:
    code = """
import sys
from starlette.testclient import TestClient
from modelapi import tracing
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier
app = create_app([IrisClassifier()], Settings(auth="off"))
with TestClient(app) as client:
    body = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/v2/models/iris/infer", json={"inputs": [
        {"name": n, "datatype": "FP64", "shape": [1], "data": [1.0]}
        for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]}).status_code == 200
assert not tracing.ON
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_job_is_traced_chunk_by_chunk(spans: InMemorySpanExporter, tmp_path: object) -> None:
    settings = _settings(state_dir=tmp_path, job_chunk_rows=2)
    with TestClient(create_app([Doubler()], settings)) as client:
        spans.clear()
        rows = [{"x": float(i)} for i in range(5)]
        r = client.post("/models/doubler/jobs", json=rows)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        for _ in range(500):
            state = client.get(f"/jobs/{job_id}").json()["status"]
            if state not in ("queued", "running"):
                break
            threading.Event().wait(0.02)
        assert state == "succeeded", state
    chunks = _by_name(spans.get_finished_spans(), "job chunk")
    assert [(s.attributes or {})["modelapi.job.chunk"] for s in chunks] == [0, 1, 2]
    assert [(s.attributes or {})["modelapi.job.rows"] for s in chunks] == [2, 2, 1]
    assert all((s.attributes or {})["modelapi.job.id"] == job_id for s in chunks)
    predicts = _by_name(spans.get_finished_spans(), "predict")
    chunk_traces = {s.context.trace_id for s in chunks}
    assert {p.context.trace_id for p in predicts} >= chunk_traces


def _x(values: list[float]) -> dict[str, object]:
    return {"name": "x", "datatype": "FP64", "shape": [len(values)], "data": values}


class _Lines:
    encoding = "utf-8"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(text.splitlines())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
