"""The HTTP floor: a bare ASGI app that runs the minimal request (``minimal.handle``) once per request.

    BENCH_MODEL=model.skops uvicorn bench.floor:app --http httptools --loop uvloop --no-access-log

No framework, no middleware, no batching, no limits: what any Python server on uvicorn must at least spend
per request. modelapi is measured against it (docs/benchmarks.md). It answers ``POST /predict`` with the
friendly route's answer and ``GET /health`` with ``ok``; anything else gets a 404.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from .minimal import class_keys, handle, load

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODEL = load(Path(os.environ["BENCH_MODEL"]))
KEYS = class_keys(MODEL)
JSON = [(b"content-type", b"application/json")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/predict":
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        status, content = 200, handle(MODEL, KEYS, b"".join(chunks))
    elif scope["path"] == "/health":
        status, content = 200, b"ok"
    else:
        status, content = 404, b"{}"
    headers = [*JSON, (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
