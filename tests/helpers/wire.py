"""modelapi's HTTP protocol in process: ``Wire``, a transport that keeps what is written to it, ``Connection``, one
connection of the protocol over it, and ``parse_answers``, the HTTP/1.1 answers in what was written (framed by
``Content-Length``, as every answer of modelapi's is)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.server import ServerState

from modelapi.http.pacing import Pacing
from modelapi.security.slow_clients import Shedder, protocol_class


class Wire(asyncio.Transport):
    """A transport that keeps each write until it is closed (then, as a socket's, it sends nothing more); ``peer``
    is the client's address, ``tls`` whether it is a TLS one; ``reading``: whether the protocol would be handed
    what the client sends (it has not paused reading)."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000), tls: bool = False) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.peer = peer
        self.tls = tls

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed:
            self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"peername": self.peer, "sockname": ("127.0.0.1", 8000), "sslcontext": object() if self.tls else None}
        return extra.get(name, default)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's last value
    names: list[str]  # the header names in the order they came
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_answers(raw: bytes) -> list[Answer]:
    """Every complete answer in ``raw``, in order."""
    answers = []
    while b"\r\n\r\n" in raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        names = [line.partition(":")[0].lower() for line in lines]
        headers = {line.partition(":")[0].lower(): line.partition(":")[2].strip() for line in lines}
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        answers.append(Answer(int(status_line.split()[1]), headers, names, rest[:length]))
        raw = rest[length:]
    return answers


class Connection:
    """One connection of the server's protocol (``protocol_class``) to ``app`` as uvicorn loads it (its proxy-headers
    step in front: by default ``FORWARDED_ALLOW_IPS`` trusts 127.0.0.1 and ::1); ``pacing``: the server's, shared by
    its connections (``http/pacing.py``); ``header_timeout_s``, ``max_header_bytes`` and ``body_timeout_s``: the
    protocol's (``--header-timeout``, ``--max-header-bytes``, ``--body-timeout``)."""

    def __init__(
        self,
        app: Any,
        shedding: Shedder | None = None,
        peer: tuple[str, int] = ("127.0.0.1", 50000),
        tls: bool = False,
        config: uvicorn.Config | None = None,
        pacing: Pacing | None = None,
        header_timeout_s: float = 10.0,
        max_header_bytes: int = 65536,
        body_timeout_s: float = 60.0,
    ) -> None:
        if config is None:
            config = uvicorn.Config(app, log_config=None, lifespan="off")
            config.load()
        self.protocol = protocol_class(
            header_timeout_s, max_header_bytes, shedding, pacing, body_timeout_s=body_timeout_s
        )(config=config, server_state=ServerState(), app_state={})
        self.wire = Wire(peer, tls)
        self.protocol.connection_made(self.wire)
        self._read = 0

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def send(self, data: bytes, answers: int = 1, timeout: float = 5.0) -> list[Answer]:
        """Feed ``data``; the next ``answers`` answers, once written (``AssertionError`` after ``timeout`` s)."""
        self.feed(data)
        return await self.answers(answers, timeout)

    async def answers(self, n: int = 1, timeout: float = 5.0) -> list[Answer]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = parse_answers(b"".join(self.wire.writes[self._read :]))
            if len(found) >= n:
                self._read = len(self.wire.writes)
                return found
            assert loop.time() < deadline, f"{len(found)} answers of {n} after {timeout} s: {self.wire.writes}"
            await asyncio.sleep(0.001)

    def close(self) -> None:
        self.protocol.connection_lost(None)
