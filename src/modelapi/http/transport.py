"""One ``send`` per small response: the response head waits for its body's first write.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and each is a system call
(uvloop writes at once when the socket takes it). For a response whose head carries a ``content-length``, the
body follows in the same task at once, so ``HeadHolding`` keeps the head and writes it with the body's first
bytes: one system call instead of two for the usual JSON answer (measured: docs/benchmarks.md, "One
connection"). A head without a length (a streamed or chunked response) and ``100 Continue`` go out at once; a
held head goes out when the response is complete (a ``HEAD`` request's answer has no body write: the protocol
flushes it then) and before the transport closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class HeadHolding:
    """The connection's transport for uvicorn's HTTP protocol and its request cycles; everything but ``write``
    and ``close`` is the wrapped transport's."""

    __slots__ = ("held", "is_closing", "pause_reading", "resume_reading", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None
        # the wrapped transport's own methods, not methods of this class that call them: asked on every request
        # (``is_closing`` by uvicorn's protocol and this server's), a call through Python would cost a frame each
        self.is_closing: Callable[[], bool] = transport.is_closing
        self.pause_reading: Callable[[], None] = transport.pause_reading
        self.resume_reading: Callable[[], None] = transport.resume_reading

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held + data)
        elif (
            data.startswith(b"HTTP/1.1 ")
            and data.endswith(b"\r\n\r\n")
            and not data.startswith(b"HTTP/1.1 100")
            and b"\r\ncontent-length: " in data
        ):
            # a head alone that a body of known length follows (uvicorn writes header names in lower case)
            self.held = data
        else:
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, set_protocol, abort, ...
        return getattr(self.transport, name)
