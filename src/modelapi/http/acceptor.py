"""The main port's listener: accepts a bounded batch of connections each time the socket is readable.

uvloop's own listener (``loop.create_server``) accepts one connection per loop iteration: since libuv 1.45
(libuv/libuv#3696) ``uv__server_io`` makes one ``accept4`` per readiness event and waits for the next poll to be
told again. Under a flood the busy loop iterates some 30-220 times a second, so a new connection waits seconds in
the kernel's accept queue before the server sees its request, and cannot even get the fast 503 that overload
answers with (docs/overload.md). This listener is a reader on the non-blocking socket that accepts until the
queue is empty (``EAGAIN``) or ``BATCH`` connections are taken, and hands each one to uvloop with
``connect_accepted_socket``: the same transport, protocol factory, TLS context and handshake timeout as
``create_server`` gives, TCP_NODELAY included (uvloop's TCP transport sets it). The bound keeps one turn from
being filled with connections' set-up; the reader stays registered, so the rest are taken in the next turns.

It stands in for the ``asyncio.Server`` that uvicorn keeps in ``Server.servers``: ``close`` stops accepting and
closes the socket, ``wait_closed`` returns once closed (as uvloop's does: uvicorn waits for the connections itself,
through its protocol's ``server_state``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable, Coroutine
from typing import Any, cast

import uvicorn

log = logging.getLogger("modelapi")

#: connections accepted per readiness event at most, chosen by measurement (docs/overload.md): a batch's hand-over
#: is about 1.3 ms of the loop (some 20 µs a connection) before the HTTP protocol's own set-up
BATCH = 64
#: how long accepting pauses when the process or the system is out of file descriptors or memory: a connection
#: closing frees one; polling at once would spin on a readable socket that cannot be accepted from
PAUSE_S = 0.5
#: accept errors that say the process or the system is out of a resource (pause), rather than that one connection
#: went wrong before it was accepted (skip it)
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ProtocolFactory = Callable[[], asyncio.Protocol]


def serve(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    """Listen on ``sockets`` for uvicorn's ``server``, in its startup: what its ``loop.create_server`` call would
    do (the protocol made as its factory makes it, its TLS context, its backlog), with this listener."""
    config = server.config

    def create_protocol() -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state
        )

    acceptors = []
    for sock in sockets:
        sock.listen(config.backlog)
        acceptors.append(Acceptor(sock, create_protocol, ssl=config.ssl, batch=BATCH))  # (bench.probe_wait sets it)
    # uvicorn's shutdown closes them (accepting stops before anything else) and awaits wait_closed
    server.servers = cast(list[asyncio.Server], acceptors)


class Acceptor:
    """The listener on ``sock``: a reader on the loop from construction until ``close``."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: ProtocolFactory,
        *,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        batch: int = BATCH,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = protocol_factory
        self._ssl = ssl
        self._handshake_timeout = ssl_handshake_timeout if ssl is not None else None
        self._batch = batch
        self._closed = False
        self._closed_event = asyncio.Event()
        self._paused: asyncio.TimerHandle | None = None
        self._short_of: int | None = None  # the resource error logged, until an accept succeeds again
        self._handshakes: set[asyncio.Task[Any]] = set()  # TLS connections until their handshake ends
        sock.setblocking(False)
        self._loop.add_reader(sock, self._accept)

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._closed else [self._sock]

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stop accepting and close the socket (connections already handed over stay open)."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        else:
            self._loop.remove_reader(self._sock)
        self._sock.close()
        self._closed_event.set()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty (or another worker sharing the socket took the connection)
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._pause(exc)
                    return
                # ECONNABORTED, EPROTO, a network error on the connection: that connection is gone, not the listener
                log.debug("accept: %s", exc)
                continue
            if self._short_of is not None:
                log.warning("accepting connections again")
                self._short_of = None
            try:
                self._hand_over(conn)
            except Exception:
                conn.close()
                log.exception("could not set up an accepted connection")

    def _hand_over(self, conn: socket.socket) -> None:
        """``connect_accepted_socket`` run here, up to its wait for ``connection_made`` (or the TLS handshake):
        the protocol and the transport exist before the next accept. A plain connection is finished by the
        waiter's callback, without a task; a TLS one gets a task, as its handshake may take many turns."""
        coro = self._loop.connect_accepted_socket(
            self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
        )
        if self._ssl is not None:
            task = self._loop.create_task(coro)
            self._handshakes.add(task)
            task.add_done_callback(self._handshake_done)
            return
        _drive(coro)

    def _handshake_done(self, task: asyncio.Task[Any]) -> None:
        self._handshakes.discard(task)
        if not task.cancelled():
            _log_failure(task.exception())

    def _pause(self, exc: OSError) -> None:
        if self._short_of != exc.errno:
            log.error(
                "cannot accept connections: %s; pausing accepts for %g s at a time until one succeeds", exc, PAUSE_S
            )
            self._short_of = exc.errno
        self._loop.remove_reader(self._sock)
        self._paused = self._loop.call_later(PAUSE_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self._sock, self._accept)


def _drive(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` to its end without a task: its first step now (raising what it raises), the next each time the
    future it waits on is done. (A task would start it a turn later, and cost a task per connection.)"""
    try:
        waited = coro.send(None)
    except StopIteration:  # (connect_accepted_socket always waits for connection_made first)
        return

    def step(_: object) -> None:
        try:
            waited = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # the connection's failure, reported as a task's would be
            _log_failure(exc)
            return
        waited.add_done_callback(step)

    waited.add_done_callback(step)


def _log_failure(exc: BaseException | None) -> None:
    # a client that went away or failed its TLS handshake: uvloop's own listener logs these at debug level only
    if exc is None:
        return
    if isinstance(exc, OSError):
        log.debug("connection set-up failed: %s", exc)
    else:
        log.error("connection set-up failed", exc_info=exc)
