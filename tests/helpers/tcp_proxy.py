"""A TCP proxy in the test's event loop that can stop passing bytes on, one way or both, to play a server that
stops answering (``silent``) or one whose answers are lost after it acted on the request (``deaf``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

Mode = Literal["forward", "silent", "deaf"]


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        #: forward: both ways; silent: neither way (the bytes are dropped); deaf: to the server only
        self.mode: Mode = "forward"
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_server: bool) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "forward" or (self.mode == "deaf" and to_server):
                    writer.write(data)
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers.add(server_w)
        for args in ((client_r, server_w, True), (server_r, client_w, False)):
            task = asyncio.ensure_future(self._pipe(*args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(target_port)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
        for writer in proxy._writers:
            writer.close()
        await server.wait_closed()
