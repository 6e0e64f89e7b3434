"""The gRPC front end's server: grpcio's asyncio server on the worker's event loop, beside uvicorn.

``GrpcServer`` serves ``inference.GRPCInferenceService`` (``servicer.py``), the standard ``grpc.health.v1``
service and server reflection on ``--grpc-port``. It starts when uvicorn has bound its socket and stops with
it: on shutdown it stops accepting calls at once and gives those in flight the grace period, and the data
plane closes only after that (``server.py`` awaits ``stopped`` before the app's shutdown).

Health follows readiness: ``SERVING`` for the server ("") and the inference service while ``ServerReady``
would answer true (models loaded, every worker up), ``NOT_SERVING`` while starting and from the moment
shutdown begins. Every worker binds the port with ``SO_REUSEPORT`` (the parent reserved it first,
``server.reserve_grpc``), and with ``--workers N`` the kernel spreads connections among them, as for HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ..settings import Settings
from . import proto
from .servicer import Frontend, Servicer

log = logging.getLogger("modelapi")

#: how often health follows readiness (the cluster flag and model states change without telling anyone)
HEALTH_POLL_S = 0.5


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the same files as HTTPS (``--tls-cert``, ``--tls-key``, ``--tls-ca`` for client certificates)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    ca = settings.tls_ca.read_bytes() if settings.tls_ca is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


class GrpcServer:
    def __init__(self, settings: Settings, port: int, frontend: Frontend) -> None:
        self.settings = settings
        self.port = port
        self.frontend = frontend
        self.health = _Health()
        self._server: grpc.aio.Server | None = None
        self._poll: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._serving: bool | None = None

    async def start(self) -> None:
        settings = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                # the body limit of HTTP; over it the call ends RESOURCE_EXHAUSTED before any model is involved
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        server.add_generic_rpc_handlers((Servicer(self.frontend).handlers(settings.management_routes),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(_reflected(), server, pool=proto.POOL)
        where = address(settings.host, self.port)
        creds = credentials(settings)
        bound = server.add_secure_port(where, creds) if creds is not None else server.add_insecure_port(where)
        if bound == 0:
            raise OSError(f"grpc_port: cannot listen on {where}")
        await server.start()
        self._server = server
        await self._follow()
        self._poll = asyncio.get_running_loop().create_task(self._follow_forever())

    async def _follow(self) -> None:
        """Health status from readiness, set when it changes."""
        services = self.frontend.services()
        serving = services is not None and self.frontend.ready() and services.dataplane.ready
        if serving is not self._serving:
            self._serving = serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for service in ("", proto.SERVICE):
                await self.health.set(service, status)

    async def _follow_forever(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            await self._follow()

    def begin_stop(self) -> None:
        """Stop accepting calls now and let those in flight finish within the grace period (idempotent)."""
        if self._server is None or self._stopping is not None:
            return
        self._stopping = asyncio.get_running_loop().create_task(self._stop(self._server))

    async def _stop(self, server: grpc.aio.Server) -> None:
        if self._poll is not None:
            self._poll.cancel()
        await self.health.enter_graceful_shutdown()
        await self.health.end_watches()
        await server.stop(self.settings.grace_period_s)

    async def stopped(self) -> None:
        """Wait until the server has stopped (beginning the stop if nothing did)."""
        self.begin_stop()
        if self._stopping is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._stopping


class _Health(health.aio.HealthServicer):  # type: ignore[misc]
    """grpcio's health service, whose ``Watch`` streams end once shutdown has told them ``NOT_SERVING``.

    A ``Watch`` stream otherwise never ends, and the server's stop would wait out the whole grace period for
    every probe that watches, however soon the calls that matter had finished.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Future[None]] = set()
        self._ending = False

    async def Watch(self, request: Any, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        self._watches.add(watch)
        try:
            await watch
        except asyncio.CancelledError:
            if not self._ending:  # the call itself was cancelled (the client left): pass it on
                raise
        finally:
            self._watches.discard(watch)

    async def end_watches(self) -> None:
        """After ``enter_graceful_shutdown``: let the watchers receive NOT_SERVING, then end their streams."""
        self._ending = True
        if self._watches:
            await asyncio.sleep(0.1)
            for watch in list(self._watches):
                watch.cancel()


def _reflected() -> Sequence[str]:
    """The services reflection describes; their files are copied into the protocol's own pool."""
    for module in (health_pb2, reflection_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        with contextlib.suppress(TypeError):  # already added by an earlier server in this process
            proto.POOL.Add(file)
    return (proto.SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
