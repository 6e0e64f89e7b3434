"""The gRPC load generator: a closed loop on grpc.aio, one channel (TCP connection) per concurrent caller.

wrk speaks no gRPC, so the gRPC cells use this Python process instead, pinned to the load core as wrk is. It
sends one pre-serialized ``ModelInferRequest`` (raw contents, as tritonclient sends) again as soon as each
answer arrives, and prints the same JSON line as ``report.lua``. Python is slower than wrk: at high
concurrency it can be the bottleneck, so the server's CPU time per request is the fairer comparison.

    python -m bench.grpc_load ADDRESS BODY_FILE CONNECTIONS SECONDS
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import orjson

from modelapi.grpc import proto

from .loadgen import MARK
from .workload import N_FEATURES, Answer

METHOD = f"/{proto.SERVICE}/ModelInfer"


def request_bytes(model: str, rows: np.ndarray) -> bytes:
    """An infer request for ``rows`` of the bench's model: one FP64 input ``input`` [n, 20] in raw contents."""
    message = proto.ModelInferRequest(model_name=model)
    message.inputs.add(name="input", datatype="FP64", shape=[len(rows), N_FEATURES])
    message.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    return bytes(message.SerializeToString())


def parse(answer: bytes) -> Answer:
    message = proto.ModelInferResponse.FromString(answer)
    dtypes = {"INT64": "<i8", "FP64": "<f8", "FP32": "<f4", "INT32": "<i4"}
    outputs = {
        out.name: np.frombuffer(raw, dtype=dtypes[out.datatype]).reshape(list(out.shape))
        for out, raw in zip(message.outputs, message.raw_output_contents, strict=True)
    }
    return Answer(outputs["label"], outputs["probabilities"])


def call(address: str, body: bytes, timeout: float = 30.0) -> bytes:
    """One call, for the answer check before timing."""
    with grpc.insecure_channel(address) as channel:
        return bytes(channel.unary_unary(METHOD)(body, timeout=timeout))


async def _load(address: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own per channel, as wrk's
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def caller(channel: grpc.aio.Channel) -> None:
        nonlocal errors
        method = channel.unary_unary(METHOD)
        while True:
            begun = time.perf_counter()
            if begun >= stop:
                return
            try:
                await method(body, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - begun)

    try:
        for channel in channels:
            await channel.channel_ready()
        started = time.perf_counter()
        stop = started + seconds
        await asyncio.gather(*(caller(c) for c in channels))
        duration = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    ordered = np.sort(np.array(latencies)) if latencies else np.zeros(1)
    return {
        "requests": len(latencies) + errors,
        "duration_us": duration * 1e6,
        "p50_us": float(np.percentile(ordered, 50)) * 1e6,
        "p99_us": float(np.percentile(ordered, 99)) * 1e6,
        "errors_status": errors,
    }


def main(argv: list[str]) -> int:
    address, body_path, connections, seconds = argv
    result = asyncio.run(_load(address, Path(body_path).read_bytes(), int(connections), float(seconds)))
    print(MARK + orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
