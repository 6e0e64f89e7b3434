"""The gRPC server before the models have loaded: live, not ready, health NOT_SERVING, every other RPC
UNAVAILABLE with HTTP's "models are loading" text; a message over the body limit refused by grpcio."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.ports import free_port
from modelapi.grpc import proto
from modelapi.grpc.server import GrpcServer
from modelapi.grpc.servicer import Frontend
from modelapi.settings import Settings


def test_starting_then_stopping() -> None:
    async def run() -> None:
        port = free_port()
        settings = Settings(max_body_bytes=10_000, grace_period_s=30)
        server = GrpcServer(settings, port, Frontend(services=lambda: None, ready=lambda: False))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                def rpc(name: str) -> grpc.aio.UnaryUnaryMultiCallable:
                    request, response = proto.METHODS[name]
                    return channel.unary_unary(
                        f"/{proto.SERVICE}/{name}",
                        request_serializer=request.SerializeToString,
                        response_deserializer=response.FromString,
                    )

                assert (await rpc("ServerLive")(proto.ServerLiveRequest())).live
                assert not (await rpc("ServerReady")(proto.ServerReadyRequest())).ready
                try:
                    await rpc("ModelInfer")(proto.ModelInferRequest(model_name="m"))
                    raise AssertionError("answered while starting")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    assert exc.details() == "the server is starting: models are loading"
                    assert ("retry-after", "1") in tuple(exc.trailing_metadata() or ())
                try:
                    await rpc("RepositoryIndex")(proto.RepositoryIndexRequest())
                    raise AssertionError("management RPCs without --enable-management")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
                big = proto.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 20_000])
                try:
                    await rpc("ModelInfer")(big)
                    raise AssertionError("a message over max_body_bytes was read")
                except grpc.aio.AioRpcError as exc:  # refused by grpcio before any handler runs
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                health = health_pb2_grpc.HealthStub(channel)
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

                # a probe watching health hears NOT_SERVING at shutdown, and its stream does not hold the stop
                # for the grace period (30 s)
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                begun = time.monotonic()
                await server.stopped()
                assert time.monotonic() - begun < 5
                assert await watch.read() == grpc.aio.EOF
                assert await watch.code() == grpc.StatusCode.OK
        finally:
            await server.stopped()

    asyncio.run(run())
