"""``--metrics-port``: ``GET /metrics`` alone, without a key, on a second listening socket.

The socket is bound once (by ``server.run``, in the supervisor with several workers: one socket all workers
accept on, like the main one) and served in each worker by this small asyncio server on the worker's event
loop: no middleware, no authentication, plain HTTP/1.1, one request per connection. Any worker may answer,
since the totals are aggregated over every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from .routes import PATH, scrape

log = logging.getLogger("modelapi.metrics")
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 10.0


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


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        target = rest.rpartition(" ")[0] or rest
        path = target.split("?", 1)[0]
        if path != PATH:
            writer.write(_response("404 Not Found", b"only GET /metrics is served on this port\n"))
        elif method not in ("GET", "HEAD"):
            writer.write(_response("405 Method Not Allowed", b"GET /metrics\n"))
        else:
            body, content_type = await scrape()
            writer.write(_response("200 OK", body, content_type, head=method == "HEAD"))
        await writer.drain()
    except Exception:
        log.exception("metrics port: the scrape failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(sock: socket.socket) -> asyncio.Server:
    """Start answering on ``sock`` (listening already) on this event loop; ``close()`` the server to stop.
    The server closes its own duplicate of the socket, never the caller's."""
    dup = sock.dup()
    dup.setblocking(False)
    return await asyncio.start_server(_handle, sock=dup, limit=MAX_HEAD_BYTES)
