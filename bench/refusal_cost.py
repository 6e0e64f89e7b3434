"""The application's CPU per served vs refused request, in process (no sockets, no uvicorn): what admission on
the head saves, apart from the HTTP server's own per-request cost, which the overload cell measures with it.

The demo-like iris classifier, 32-row V2 JSON requests driven straight into the ASGI app on one event loop;
first served (200), then refused at the in-flight limit (503, the gate held full), each timed by
``time.process_time`` over the same number of requests.

``--protocol``: the same requests as bytes on one keep-alive connection of modelapi's HTTP protocol (uvicorn's,
with a transport that keeps what is written, no sockets), so uvicorn's parsing and framing count too: served,
refused by the app (503 from the gate, after the middleware), and refused on the head in the protocol
(``http/shedding.py``).

    python -m bench.refusal_cost [REQUESTS] [--protocol]
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
PATH = "/v2/models/iris/infer"


def body() -> bytes:
    """The 32-row V2 JSON request body both measures send."""
    inputs = [{"name": f, "datatype": "FP64", "shape": [32], "data": [1.0] * 32} for f in FEATURES]
    return orjson.dumps({"inputs": inputs})


def request_bytes() -> bytes:
    """That request as it comes over a connection: head and body."""
    data = body()
    head = b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % (PATH.encode(), len(data)) + data


async def measure(n: int) -> tuple[float, float]:
    # early retries not held: each request here retries the last refusal at once, and a held one waits its
    # Retry-After (a second or more) instead of being refused
    settings = Settings(job_workers=0, max_inflight=1, log_level="warning", hold_early_retries=False)
    app: Any = create_app([IrisClassifier()], settings)
    for name in ("modelapi.access", "modelapi.rejections"):
        logging.getLogger(name).setLevel(logging.ERROR)
    data = body()
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]

    async def one() -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": PATH, "raw_path": PATH.encode(), "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 1234), "server": ("bench", 80),
        }  # fmt: skip
        messages = [{"type": "http.request", "body": data, "more_body": False}]
        status: list[int] = []

        async def receive() -> Any:
            if messages:
                return messages.pop()
            await asyncio.sleep(60)

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    async def timed(expected: int) -> float:
        for _ in range(200):  # warm-up
            await one()
        started = time.process_time()
        for _ in range(n):
            assert await one() == expected
        return (time.process_time() - started) / n * 1e6

    async with app.router.lifespan_context(app):
        served = await timed(200)
        app.state.dataplane.gate.inflight["iris"] = 1  # the model full: every request is refused on its head
        refused = await timed(503)
    return served, refused


class _Wire(asyncio.Transport):
    """A transport that counts what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def measure_protocol(n: int) -> tuple[float, float, float]:
    import uvicorn
    from uvicorn.server import ServerState

    from modelapi.http.shedding import Shedding
    from modelapi.security.slow_clients import protocol_class

    shedding = Shedding()
    # early retries not held: every request here comes from one connection, each a retry of the last refusal
    settings = Settings(job_workers=0, max_inflight=1, log_level="warning", hold_early_retries=False)
    app: Any = create_app([IrisClassifier()], settings, shedding=shedding)
    for name in ("modelapi.access", "modelapi.rejections"):
        logging.getLogger(name).setLevel(logging.ERROR)
    raw = request_bytes()
    config = uvicorn.Config(app, log_config=None, lifespan="off")
    config.load()

    async def timed(shed: bool) -> float:
        protocol = protocol_class(10.0, 65536, shedding if shed else None)(
            config=config, server_state=ServerState(), app_state={}
        )
        wire = _Wire()
        protocol.connection_made(wire)

        async def one() -> None:
            before = wire.writes
            protocol.data_received(raw)
            # at least one turn of the loop, as a server takes between reads (a refusal written on the head needs
            # none: without it, the keep-alive timers it cancels would pile up in the loop's heap)
            await asyncio.sleep(0)
            while wire.writes == before:
                await asyncio.sleep(0)

        for _ in range(200):  # warm-up
            await one()
        started = time.process_time()
        for _ in range(n):
            await one()
        spent = (time.process_time() - started) / n * 1e6
        protocol.connection_lost(None)
        return spent

    async with app.router.lifespan_context(app):
        served = await timed(False)
        gate = app.state.dataplane.gate
        gate.inflight["iris"] = 1  # the model full: every request is refused on its head
        gate.refusing = True
        by_app = await timed(False)
        on_head = await timed(True)
    return served, by_app, on_head


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 3000
    if "--protocol" in sys.argv[1:]:
        served, by_app, on_head = asyncio.run(measure_protocol(n))
        print(
            f"through the protocol: served {served:.0f} us CPU a request; refused by the app {by_app:.0f} us "
            f"({by_app / served:.2f} of served); refused on the head {on_head:.0f} us ({on_head / served:.2f})"
        )
        return 0
    served, refused = asyncio.run(measure(n))
    print(f"served: {served:.0f} us CPU a request; refused: {refused:.0f} us ({refused / served:.2f} of served)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
