"""What the log costs per request: the request-context middleware around a trivial ASGI app, called directly
(no sockets), with the access log off (level WARNING), on in text and on in JSON (written to /dev/null), each
line written at once (``--access-log-flush-ms 0``) and buffered (the default, 50 ms: one write per PIPE_BUF).

    .venv/bin/python -m bench.access_log [REQUESTS]
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from starlette.types import Message, Receive, Scope, Send

from modelapi import logs
from modelapi.http.middleware import RequestContextMiddleware

BODY = b'{"prediction": "setosa"}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def scope() -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/models/iris/predict",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"80")],
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
        "scheme": "http",
    }


async def measure(n: int) -> float:
    middleware = RequestContextMiddleware(app, max_body_bytes=1 << 20)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * 80, "more_body": False}

    async def send(message: Message) -> None:
        pass

    for _ in range(1000):  # warm up
        await middleware(scope(), receive, send)
    started = time.perf_counter()
    for _ in range(n):
        await middleware(scope(), receive, send)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    root = logging.getLogger()
    with open(os.devnull, "w") as null:
        results = {}
        for name, log_format, level, delay in (
            ("off", "text", logging.WARNING, 0.0),
            ("text", "text", logging.INFO, 0.0),
            ("json", "json", logging.INFO, 0.0),
            ("text buffered", "text", logging.INFO, 0.05),
            ("json buffered", "json", logging.INFO, 0.05),
        ):
            handler = logs.make_handler(log_format, null, flush_delay=delay)
            root.handlers = [handler]
            root.setLevel(level)
            results[name] = min(asyncio.run(measure(n)) for _ in range(3))
            handler.close()
    for name, us in results.items():
        extra = "" if name == "off" else f"  (+{us - results['off']:.1f} µs for the access line)"
        print(f"access log {name:>13}: {us:6.1f} µs per request{extra}")


if __name__ == "__main__":
    main()
