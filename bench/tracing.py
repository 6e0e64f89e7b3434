"""What tracing costs: the per-request calls with tracing off against no calls, and one request in process with
tracing off against on (docs/observability.md#traces). Run: ``.venv/bin/python -m bench.tracing``."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Sequence

import httpx

from modelapi import tracing
from modelapi.http.app import create_app
from modelapi.settings import Settings

ROUNDS = 7
CALLS = 1_000_000


def with_calls() -> None:
    """Every tracing call one request makes with tracing off: Call, the batcher's item, its batch start and run,
    the codec's decode and encode blocks (the server-span middleware is not installed at all)."""
    if tracing.ON:
        pass
    if tracing.ON:
        pass
    if tracing.ON:
        pass
    if tracing.ON:
        pass
    with tracing.span("decode"):
        pass
    with tracing.span("encode"):
        pass


def without_calls() -> None:
    pass


def per_call_ns(fn: object) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(ROUNDS, CALLS)) / CALLS * 1e9


class _Discard:
    """A span exporter that drops what it is given (the cost of recording, not of a network)."""

    def export(self, spans: Sequence[object]) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


async def requests_us(on: bool, n: int = 3000) -> float:
    provider = None
    if on:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
        tracing.use(provider)
    try:
        app = create_app(None, Settings(auth="off", metrics=False))
        await app.state.dataplane.start()
        body = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
            for _ in range(300):
                await client.post("/predict", json=body)
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(n // 5):
                    await client.post("/predict", json=body)
                samples.append((time.perf_counter() - started) / (n // 5) * 1e6)
        await app.state.dataplane.close()
        return statistics.median(samples)
    finally:
        tracing.use(None)
        if provider is not None:
            provider.shutdown()


def span_us() -> float:
    """One span started, made current and ended with the SDK and a batch processor (tracing on)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
    tracer = provider.get_tracer("bench")

    def one() -> None:
        with tracer.start_as_current_span("span"):
            pass

    n = 20_000
    try:
        return min(timeit.repeat(one, number=n, repeat=ROUNDS)) / n * 1e6
    finally:
        provider.shutdown()


def main() -> None:
    assert not tracing.ON
    calls, empty = per_call_ns(with_calls), per_call_ns(without_calls)
    print(f"tracing off, the per-request calls: {calls:.1f} ns; no calls: {empty:.1f} ns; cost {calls - empty:.1f} ns")
    one = span_us()
    print(f"tracing on: one span {one:.1f} us; a request's five: {5 * one:.0f} us")
    if "--requests" in sys.argv:  # end to end in process; noisy on a shared machine
        off = asyncio.run(requests_us(False))
        on = asyncio.run(requests_us(True))
        print(f"one /predict request in process (ASGITransport, demo iris, 1 row): off {off:.0f} us, on {on:.0f} us")


if __name__ == "__main__":
    main()
