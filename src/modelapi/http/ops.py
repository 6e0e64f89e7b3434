"""``--metrics-port``, the operations port: ``GET /metrics`` and the health routes (``/v2/health/live``,
``/v2/health/ready``), without a key, on a listening socket of their own.

Probes get a listener whose accept queue no flood on the main port fills: the kubelet's probes open a new
connection each time, and on the main port such a connection waits behind every connection a flood opened
before it (docs/overload.md). The health answers are the main port's (``Lifecycle.health``): live while models
load, ready only once they have and until the drain begins. Nothing else is served here (404), so the port
needs no key and reveals nothing a caller could not learn from an unauthenticated probe or a scrape.

The socket is bound once (by ``server.run``, in the supervisor with several workers: one socket all workers
accept on, like the main one) and served in each worker by this small asyncio server on the worker's event
loop, from the moment the worker listens on the main port until its drain has ended: no middleware, no
authentication, plain HTTP/1.1 (also with ``--tls-cert``), one request per connection. Any worker may answer a
scrape, since the totals are aggregated over every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from .. import jsonutil
from ..protocols.metrics.routes import PATH as METRICS_PATH
from ..protocols.metrics.routes import scrape

log = logging.getLogger("modelapi.metrics")
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 10.0
#: what a health path answers now (status and JSON body), None for any other path: ``Lifecycle.health``
Health = Callable[[str], tuple[int, dict[str, bool]] | None]
_REASONS = {200: "OK", 503: "Service Unavailable"}


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8", head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        "cache-control: no-store",
        "connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else body)


def _handler(health: Health) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    served = f"GET {METRICS_PATH}, /v2/health/live and /v2/health/ready"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = "a request"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = rest.rpartition(" ")[0] or rest
            path = target.split("?", 1)[0]
            answer = health(path)
            if answer is None and path != METRICS_PATH:
                writer.write(_response("404 Not Found", f"only {served} are served on this port\n".encode()))
            elif method not in ("GET", "HEAD"):
                writer.write(_response("405 Method Not Allowed", f"{served}\n".encode()))
            elif answer is not None:
                status, body = answer
                reason = f"{status} {_REASONS[status]}"
                writer.write(_response(reason, jsonutil.dumps(body), "application/json", head=method == "HEAD"))
            else:
                text, content_type = await scrape()
                writer.write(_response("200 OK", text, content_type, head=method == "HEAD"))
            await writer.drain()
        except Exception:
            log.exception("operations port: the answer to %s failed", path)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return handle


async def serve(sock: socket.socket, health: Health) -> asyncio.Server:
    """Start answering on ``sock`` (listening already) on this event loop; ``close()`` the server to stop.
    ``health``: the health routes' answers. The server closes its own duplicate of the socket, never the
    caller's."""
    dup = sock.dup()
    dup.setblocking(False)
    return await asyncio.start_server(_handler(health), sock=dup, limit=MAX_HEAD_BYTES)
