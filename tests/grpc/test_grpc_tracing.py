"""With tracing on, a gRPC call has a server span continuing the caller's traceparent, with the data plane's
decode, queue, predict and encode spans under it (as an HTTP request has)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from helpers.ports import free_port
from modelapi import tracing
from modelapi.grpc import proto
from modelapi.grpc.server import GrpcServer
from modelapi.grpc.servicer import Frontend
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import Regressor

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


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


def test_a_grpc_call_is_traced(spans: InMemorySpanExporter) -> None:
    port = free_port()
    settings = Settings(auth="off", metrics=False)
    app = create_app([Regressor()], settings)
    services: Any = app.state.services

    async def run() -> None:
        await services.dataplane.start()
        server = GrpcServer(settings, port, Frontend(services=lambda: services, ready=lambda: True))
        await server.start()
        try:
            request = proto.ModelInferRequest(model_name="regressor")
            for name in ("a", "b"):
                request.inputs.add(name=name, datatype="FP64", shape=[1])
                request.raw_input_contents.append(np.array([1.0]).tobytes())
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                infer = channel.unary_unary(
                    f"/{proto.SERVICE}/ModelInfer",
                    request_serializer=proto.ModelInferRequest.SerializeToString,
                    response_deserializer=proto.ModelInferResponse.FromString,
                )
                spans.clear()  # the warm-up ran outside any call
                traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
                await infer(request, metadata=(("traceparent", traceparent),))
        finally:
            await server.stopped()
            await services.dataplane.close()

    asyncio.run(run())
    finished = spans.get_finished_spans()
    (server_span,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server_span.name == "inference.GRPCInferenceService/ModelInfer"
    attrs = server_span.attributes or {}
    assert attrs["rpc.system"] == "grpc" and attrs["rpc.method"] == "ModelInfer"
    assert attrs[tracing.MODEL] == "regressor" and attrs[tracing.PROTOCOL] == "grpc"
    assert f"{server_span.context.trace_id:032x}" == TRACE_ID
    assert server_span.parent is not None and f"{server_span.parent.span_id:016x}" == PARENT_ID
    for name in ("decode", "queue", "predict", "encode"):
        (child,) = [s for s in finished if s.name == name]
        assert child.context.trace_id == server_span.context.trace_id, name
