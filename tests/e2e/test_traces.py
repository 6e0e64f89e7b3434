"""The real server exports its spans over OTLP/HTTP to a receiver this test starts: POST /v1/traces with a
protobuf ExportTraceServiceRequest, decoded with opentelemetry-proto's own classes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .server import serve

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port; keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, object]]] = []  # (trace id, name, resource attributes)
        self.paths: list[str] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    receiver.paths.append(self.path)
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for resource_spans in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append((span.trace_id.hex(), span.name, resource))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def names_in(self, trace_id: str) -> list[str]:
        return [name for trace, name, _ in list(self.spans) if trace == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def test_the_server_exports_spans_of_the_incoming_trace_over_otlp_http(receiver: Receiver) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "modelapi-e2e",
    }
    with serve("toymodels:IrisClassifier", "--auth", "off", env=env) as server:
        parent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        body = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        r = httpx.post(f"{server.url}/predict", json=body, headers={"traceparent": parent})
        assert r.status_code == 200, r.text
        assert r.headers["traceresponse"].startswith(f"00-{TRACE_ID}-")
        inputs = [{"name": n, "datatype": "FP64", "shape": [1], "data": [v]} for n, v in body.items()]
        r = httpx.post(f"{server.url}/v2/models/iris/infer", json={"inputs": inputs}, headers={"traceparent": parent})
        assert r.status_code == 200, r.text
        wanted = {"POST /predict", "POST /v2/models/{name}/infer", "decode", "queue", "predict", "encode"}
        deadline = time.monotonic() + 20
        while not wanted <= set(receiver.names_in(TRACE_ID)) and time.monotonic() < deadline:
            time.sleep(0.05)
    names = receiver.names_in(TRACE_ID)
    assert wanted <= set(names), (names, receiver.paths, server.log()[-3000:])
    assert names.count("predict") == 2 and names.count("decode") == 2
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert {resource.get("service.name") for _, _, resource in receiver.spans} == {"modelapi-e2e"}
