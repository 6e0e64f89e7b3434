"""HeadHolding: a response head with a length goes out with its body's first bytes, anything else at once."""

from __future__ import annotations

import asyncio
from typing import Any

from modelapi.http.transport import HeadHolding

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class Wire:
    """A transport that records each write (each would be one system call) and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def holding() -> tuple[HeadHolding, Wire]:
    wire = Wire()
    return HeadHolding(wire), wire  # type: ignore[arg-type]


def test_a_head_with_a_length_goes_out_with_the_body_in_one_write() -> None:
    transport, wire = holding()
    transport.write(HEAD)
    assert wire.writes == []
    transport.write(b"{}")
    assert wire.writes == [HEAD + b"{}"]
    transport.write(HEAD)  # the next response on the connection: the same
    transport.write(b"[]")
    assert wire.writes == [HEAD + b"{}", HEAD + b"[]"]


def test_streamed_heads_and_100_continue_go_out_at_once() -> None:
    transport, wire = holding()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    chunked = b"HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ntransfer-encoding: chunked\r\n\r\n"
    transport.write(chunked)
    transport.write(b"3\r\na,b\r\n")
    assert wire.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", chunked, b"3\r\na,b\r\n"]


def test_a_held_head_goes_out_before_the_transport_closes() -> None:
    transport, wire = holding()
    transport.write(HEAD)
    transport.close()
    assert wire.writes == [HEAD] and wire.closed


def test_everything_else_is_the_wrapped_transport() -> None:
    transport, wire = holding()
    transport.pause_reading()
    assert wire.paused and not transport.is_closing()
    transport.resume_reading()
    assert not wire.paused
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)


def test_a_whole_response_in_one_write_is_not_held() -> None:
    transport, wire = holding()
    whole = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 8\r\n\r\ntoo slow"
    transport.write(whole)
    assert wire.writes == [whole]


def test_flush_sends_a_held_head_whose_body_never_comes() -> None:
    transport, wire = holding()
    transport.write(HEAD)  # the answer to HEAD: a length, and no body write
    transport.flush()
    transport.flush()
    assert wire.writes == [HEAD]


def test_every_transport_method_is_there_and_writes_through_it_keep_their_order() -> None:
    transport, wire = holding()
    for name in dir(asyncio.Transport):
        if not name.startswith("_"):
            assert callable(getattr(transport, name)), name
    transport.write(HEAD)
    transport.writelines([b"{", b"}"])
    assert wire.writes == [HEAD + b"{", b"}"]
