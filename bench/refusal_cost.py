"""The application's CPU per served vs refused request, in process (no sockets, no uvicorn): what admission on
the head saves, apart from the HTTP server's own per-request cost, which the overload cell measures with it.

The demo-like iris classifier, 32-row V2 JSON requests driven straight into the ASGI app on one event loop;
first served (200), then refused at the in-flight limit (503, the gate held full), each timed by
``time.process_time`` over the same number of requests.

    python -m bench.refusal_cost [REQUESTS]
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


async def measure(n: int) -> tuple[float, float]:
    app: Any = create_app([IrisClassifier()], Settings(job_workers=0, max_inflight=1, log_level="warning"))
    for name in ("modelapi.access", "modelapi.rejections"):
        logging.getLogger(name).setLevel(logging.ERROR)
    inputs = [{"name": f, "datatype": "FP64", "shape": [32], "data": [1.0] * 32} for f in FEATURES]
    body = orjson.dumps({"inputs": inputs})
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def one() -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": PATH, "raw_path": PATH.encode(), "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 1234), "server": ("bench", 80),
        }  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = []

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


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    served, refused = asyncio.run(measure(n))
    print(f"served: {served:.0f} us CPU a request; refused: {refused:.0f} us ({refused / served:.2f} of served)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
