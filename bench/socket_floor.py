"""The socket floor: the least any Python server spends to answer a request on this machine, for the refusal
cost's yardstick (``bench/overload.py``). No ASGI, no uvicorn, no modelapi code: uvloop, and httptools to find
where each request ends; every complete request gets one constant answer in one write, its body unread beyond
the parser, and the connection is kept unless the request asks to close it (``Connection: close``, HTTP/1.0).
``GET /health`` gets ``200 ok`` (for the bench's readiness wait), anything else a ``503`` with ``Retry-After``,
as a refusal is framed.

    python -m bench.socket_floor --port 8000

What it leaves out of a real refusal, and so what it does not cost: the request's scope (method, path, headers as
a list), routing, the answer's headers built per request, the access line, counting. What it keeps: the event
loop's read and write per request, the kernel's TCP work on both (on loopback, the sender's CPU also delivers
what it sends), and httptools' callbacks into Python for the URL and the message's end.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

_BODY = b'{"error": "overloaded; retry shortly"}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class Floor(asyncio.Protocol):
    __slots__ = ("_parser", "_path", "_transport")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._path = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._path += url  # a URL split over two reads comes in two calls

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(HEALTH if self._path == b"/health" else REFUSAL)
        self._path = b""
        if not self._parser.should_keep_alive():  # Connection: close, HTTP/1.0: closed after the answer
            self._transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, args.host, args.port, backlog=4096)
        await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
