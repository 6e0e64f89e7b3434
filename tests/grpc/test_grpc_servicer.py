"""What a gRPC call tells the data plane: protocol "grpc", the key's principal, the call's deadline, its id."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelapi.grpc.servicer import Frontend, Servicer
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...], remaining: float | None) -> None:
        self.metadata = metadata
        self.remaining = remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining


def test_the_call_context_carries_the_deadline_and_request_id() -> None:
    app = create_app([IrisClassifier()], Settings())
    services: Any = app.state.services
    servicer = Servicer(Frontend(services=lambda: services, ready=lambda: True))

    async def contexts() -> None:
        _, ctx = await servicer._context(FakeContext((("x-request-id", "abc-1"),), 2.5), "ModelInfer")
        assert (ctx.protocol, ctx.principal, ctx.request_id, ctx.timed) == ("grpc", None, "abc-1", True)
        assert ctx.deadline is not None and 2.0 < ctx.deadline - time.monotonic() <= 2.5
        _, ctx = await servicer._context(FakeContext((("x-request-id", "bad id!"),), None), "ModelInfer")
        assert ctx.deadline is None and ctx.request_id is not None and len(ctx.request_id) == 32

    asyncio.run(contexts())
