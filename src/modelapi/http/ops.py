"""``--metrics-port``, the operations port: ``GET /metrics`` and the health routes (``/v2/health/live``,
``/v2/health/ready``), without a key, on a listening socket of their own.

Probes get a listener whose accept queue no flood on the main port fills: the kubelet's probes open a new
connection each time, and on the main port such a connection waits behind every connection a flood opened
before it (docs/overload.md). The health answers are the main port's (``Lifecycle.health``): live while models
load, ready only once they have and until the drain begins. Nothing else is served here (404), so the port
needs no key and reveals nothing a caller could not learn from an unauthenticated probe or a scrape.

The socket is bound once (by ``server.run``, in the supervisor with several workers: one socket all workers
accept on, like the main one) and served in each worker by this small asyncio server on the worker's event
loop, from the moment the worker listens on the main port until its drain has ended (then the connections it
accepted are answered before its loop ends: ``Server.stop``): no middleware, no
authentication, plain HTTP/1.1 (also with ``--tls-cert``), one request per connection. Any worker may answer a
scrape, since the totals are aggregated over every worker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from .. import jsonutil
from ..protocols.metrics.routes import PATH as METRICS_PATH
from ..protocols.metrics.routes import scrape

log = logging.getLogger("modelapi.metrics")
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 10.0
#: the longest ``stop`` waits for the connections accepted before it to be answered (a probe sends its head at once)
STOP_WAIT_S = 1.0
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


class _Connection(asyncio.Protocol):
    """One request on one connection, answered from ``data_received`` once its head is in: a health route in the
    same turn of the loop that read it (a stream handler's task would start a turn later, and wake another turn
    after its read: each such turn is as long as a flood makes it, docs/overload.md); ``/metrics`` in a task,
    since the scrape awaits."""

    def __init__(self, health: Health, accepted: set[_Connection]) -> None:
        self.health = health
        self.accepted = accepted  # the server's open connections (``stop``)
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.scrape: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check)
        self.transport = cast(asyncio.Transport, transport)
        self.accepted.add(self)
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.timer is None:  # answered already: whatever else the client sends is dropped
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._close()
            return
        self.timer.cancel()
        self.timer = None
        self.transport.pause_reading()
        method, _, rest = bytes(self.head[: self.head.find(b"\r\n")]).decode("latin-1").partition(" ")
        target = rest.rpartition(" ")[0] or rest
        path = target.split("?", 1)[0]
        try:
            answer = self.health(path)
            if answer is None and path != METRICS_PATH:
                self._answer(_response("404 Not Found", f"only {_SERVED} are served on this port\n".encode()))
            elif method not in ("GET", "HEAD"):
                self._answer(_response("405 Method Not Allowed", f"{_SERVED}\n".encode()))
            elif answer is not None:
                status, body = answer
                reason = f"{status} {_REASONS[status]}"
                self._answer(_response(reason, jsonutil.dumps(body), "application/json", head=method == "HEAD"))
            else:
                self.scrape = asyncio.get_running_loop().create_task(self._scrape(head=method == "HEAD"))
        except Exception:
            log.exception("operations port: the answer to %s failed", path)
            self._close()

    async def _scrape(self, head: bool) -> None:
        try:
            text, content_type = await scrape()
            self._answer(_response("200 OK", text, content_type, head=head))
        except Exception:
            log.exception("operations port: the scrape failed")
            self._close()

    def _answer(self, response: bytes) -> None:
        assert self.transport is not None
        self.transport.write(response)
        self.transport.close()  # once what was written has been sent

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.accepted.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.scrape is not None and not self.scrape.done():
            self.scrape.cancel()


_SERVED = f"GET {METRICS_PATH}, /v2/health/live and /v2/health/ready"


class Server:
    """The operations port's listener on this event loop (``serve``)."""

    def __init__(self, server: asyncio.Server, accepted: set[_Connection]) -> None:
        self._server = server
        self._accepted = accepted

    def close(self) -> None:
        """Stop accepting connections (those accepted already are still answered while the loop runs)."""
        self._server.close()

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """``close()``, then wait up to ``wait_s`` for the connections accepted before to be answered, before the
        loop ends: with several workers the socket is shared, and a worker that stops before the others would
        otherwise drop, unanswered, a probe it accepted in its last moments (the others would have answered it)."""
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        await asyncio.sleep(0)  # a connection accepted in the turn before has its protocol made in the next
        while self._accepted and loop.time() < deadline:
            await asyncio.sleep(0.01)


async def serve(sock: socket.socket, health: Health) -> Server:
    """Start answering on ``sock`` (listening already) on this event loop; ``stop()`` (or ``close()``) the server
    to stop. ``health``: the health routes' answers. The server closes its own duplicate of the socket, never the
    caller's."""
    dup = sock.dup()
    dup.setblocking(False)
    accepted: set[_Connection] = set()
    server = await asyncio.get_running_loop().create_server(lambda: _Connection(health, accepted), sock=dup)
    return Server(server, accepted)
