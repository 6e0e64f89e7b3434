"""One ``send`` per small response: the response head waits for its body's first write.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and each is a system call
(uvloop writes at once when the socket takes it). For a response whose head carries a ``content-length``, the
body follows in the same task at once, so ``HeadHolding`` keeps the head and writes it with the body's first
bytes: one system call instead of two for the usual JSON answer (measured: docs/benchmarks-log.md, "One
connection"). A head without a length (a streamed or chunked response) and ``100 Continue`` go out at once; a
held head goes out when the response is complete (a ``HEAD`` request's answer has no body write: the protocol
flushes it then) and before the transport closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any


class HeadHolding:
    """The connection's transport for uvicorn's HTTP protocol and its request cycles; everything but ``write``
    and ``close`` is the wrapped transport's (``asyncio.Transport``'s methods, each passed on). Not by a
    ``__getattr__``: with one, every attribute read of this class, its own included, takes CPython's slow path."""

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
            # (slices, not startswith and endswith: those parse their arguments on each call)
            data[:9] == b"HTTP/1.1 "
            and data[-4:] == b"\r\n\r\n"
            and data[9:12] != b"100"
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

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self.transport.abort()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()
