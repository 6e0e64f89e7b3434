"""From Settings to a running server: bind, load the models, serve with uvicorn, print the banner, drain.

``run`` binds the socket once; with one worker it serves in this process, with several it hands the socket
to ``supervisor.Supervisor``, which forks the workers. Each worker runs ``serve_socket``: the models load
inside the server (``http/lifecycle.py``), so readiness answers 503 until they have, and again while draining.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette

from . import jsonutil, logs
from .dataplane import DataPlane
from .errors import ModelLoadError
from .http import ops
from .http.app import create_app
from .http.lifecycle import Lifecycle
from .http.pacing import Pacing
from .http.shedding import Shedding
from .metrics import runtime as metrics
from .models.python import is_class_spec
from .models.registry import PICKLE_SUFFIXES
from .models.sklearn import import_skops
from .repository.shared import SharedState
from .security import tls
from .security.slow_clients import GuardedHttpToolsProtocol, protocol_class
from .settings import Settings
from .supervisor import Supervisor, WorkerContext

if TYPE_CHECKING:  # grpcio is imported only when --grpc-port is set (the [grpc] extra)
    from .grpc.server import GrpcServer
    from .repository.handle import VersionHandle

log = logging.getLogger("modelapi")


def preimport(settings: Settings) -> None:
    """Import, once in the supervisor, the libraries the models will need, without loading any model.

    Forked workers then start in a fraction of a second (a replacement must serve within 2 s) and share those
    pages copy-on-write. Models themselves load in each worker: onnxruntime sessions, OpenMP and other thread
    pools do not survive a fork, so onnxruntime is left to the workers too. Failures are left to the workers,
    which report them properly.
    """
    for name in ("uvicorn.protocols.http.auto", "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on"):
        importlib.import_module(name)
    for spec in settings.models or ["demo.skops"]:
        path = Path(spec)
        names: list[str] = []
        if is_class_spec(spec) and not path.exists():
            names = [spec.split(":", 1)[0]]
        elif path.is_dir() or path.suffix.lower() in (".skops", *PICKLE_SUFFIXES):
            names = ["sklearn.base", "sklearn.pipeline", "joblib"]
            with contextlib.suppress(Exception):
                import_skops()  # as the loader does: without PyTorch, which skops would otherwise pull in
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)


_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket listening on ``host:port``.

    It is made with ``IPPROTO_TCP`` rather than protocol 0: accepted connections inherit the listener's
    protocol number, and asyncio only sets TCP_NODELAY on sockets whose protocol is TCP. Without it, Nagle's
    algorithm holds back a response's second write until the client's delayed ACK, about 40 ms per request.
    With ``reuse_port`` several processes bind the same port and the kernel spreads connections among them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int, scheme: str = "http") -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


def _formats(serving: Mapping[str, VersionHandle], versions: list[str]) -> str:
    """The versions served and their format: ``sklearn, version 1, 2`` when they agree, else each format after
    its versions (``versions 1, 2: sklearn; 3: onnx``)."""
    by_format: dict[str, list[str]] = {}
    for version in versions:
        by_format.setdefault(serving[version].model.platform, []).append(version)
    if len(by_format) == 1:
        (platform,) = by_format
        return f"{platform}, version {', '.join(versions)}"
    return "versions " + "; ".join(f"{', '.join(vs)}: {platform}" for platform, vs in by_format.items())


def banner(dataplane: DataPlane, url: str, grpc_address: str | None = None, *, key_needed: bool = False) -> str:
    """What ``serve`` prints once it is ready. ``key_needed``: authentication is on, so the curl example sends
    ``$MODELAPI_API_KEY`` and says where a key comes from (without it, the example pasted answers 401)."""
    repo = dataplane.repository
    names = repo.names()
    lines = ["", f"modelapi is serving {len(names)} model{'s' if len(names) != 1 else ''} at {url}"]
    if grpc_address is not None:
        lines.append(f"gRPC (Open Inference Protocol, inference.GRPCInferenceService): {grpc_address}")
    for name in names:
        entry = repo.entry(name)
        default = entry.default_version
        if default is None:
            lines.append(f"  - {name}: UNAVAILABLE ({entry.error or 'no version loaded'}); see {url}/models")
            continue
        extra = f"; unavailable: {', '.join(sorted(entry.failed))}" if entry.failed else ""
        lines.append(f"  - {name} ({_formats(entry.serving, entry.ready_versions())}{extra}): {url}/models/{name}")
    first = repo.ready_names()[0]
    signature = repo.resolve(first).signature
    route = "/predict" if len(names) == 1 else f"/models/{first}/predict"
    body = jsonutil.dumps(signature.example_record()).decode()
    lines += [
        f"Interactive docs: {url}/docs      OpenAPI: {url}/openapi.json",
        f"Playground (a form and a CSV batch in your browser): {url}/models/{quote(first, safe='')}/playground",
    ]
    if key_needed:
        lines += [
            "Try it (authentication is on: `modelapi keys create --name NAME` prints a key; "
            "export MODELAPI_API_KEY=<key>):",
            f'  curl -s {url}{route} -H "Authorization: Bearer $MODELAPI_API_KEY" '
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
        ]
    else:
        lines += [
            "Try it:",
            f"  curl -s {url}{route} -H 'Content-Type: application/json' -d {shlex.quote(body)}",
        ]
    lines += [
        "Press Ctrl+C to stop.",
        "",
    ]
    return "\n".join(lines)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the lifecycle when it listens and when shutdown begins; with ``ops_socket``
    (``--metrics-port``) it serves the operations port (``http/ops.py``) beside the main one.

    ``shutdown_delay_s`` (``--shutdown-delay``): on SIGTERM or SIGINT while ready, the server turns not-ready at
    once but goes on accepting and serving that long before uvicorn's shutdown begins (SIGINT meanwhile stops it at
    once; a repeated SIGTERM changes nothing). Why: the shutdown closes the listener and every idle keep-alive
    connection; a load balancer that still counts the server in sends a request on such a connection as it closes,
    and that request is lost (HAProxy closes its client's connection unanswered: docs/deployment.md). Waiting until
    the balancer's readiness checks have taken the server out leaves no request in flight toward it when it
    closes. Meanwhile every answer closes its connection (``protocol``'s ``close_after_answers``), so that clients
    that do not check readiness leave it too."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        grpc: GrpcServer | None = None,
        ops_socket: socket.socket | None = None,
        shutdown_delay_s: float = 0.0,
        protocol: type[GuardedHttpToolsProtocol] | None = None,
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grpc = grpc  # --grpc-port: started and stopped with this server
        self.ops_socket = ops_socket
        self._ops: ops.Server | None = None
        self.shutdown_delay_s = shutdown_delay_s
        #: the HTTP protocol's class, whose connections close after each answer once the delay has begun
        self.protocol = protocol
        #: when the delayed shutdown begins (``time.monotonic()``), the signal that asked for it; None: none asked
        self._delayed: tuple[float, int] | None = None
        #: the delay began and the connections' requests already read are still to be told to close (``on_tick``)
        self._to_close = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            if self.grpc is not None:
                await self.grpc.start()
            # once the main port accepts (never ready here before it), and while the models load: the startup
            # probe's liveness answers then
            if self.ops_socket is not None:
                self._ops = await ops.serve(self.ops_socket, self.lifecycle.health)
            self.lifecycle.listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:  # stops accepting now; the lifecycle waits for its calls before the app stops
            self.grpc.begin_stop()
        try:
            await super().shutdown(sockets=sockets)
        finally:
            # the operations port outlasts the drain: readiness answers 503 there until the app has stopped,
            # rather than leaving the probe's connection unanswered in the accept queue; and a probe it accepted
            # before it closed is answered before the loop ends (other workers share the socket and still answer)
            if self._ops is not None:
                await self._ops.stop(0.0 if self.force_exit else ops.STOP_WAIT_S)  # (a second signal: at once)

    async def on_tick(self, counter: int) -> bool:
        if self._to_close:
            # on the loop, not in the signal handler, which may have interrupted a connection's own code: the
            # requests each connection had already read close it after their answers (``closing`` takes the rest)
            self._to_close = False
            for connection in self.server_state.connections:
                if isinstance(connection, GuardedHttpToolsProtocol):
                    connection.close_after_answer()
        delayed = self._delayed
        if delayed is not None and not self.should_exit and time.monotonic() >= delayed[0]:
            self._delayed = None
            contextvars.Context().run(self._begin_shutdown, delayed[1], None, True, True)
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler runs in the context of whatever it interrupted: a request's, whose id would then be on
        # the lines logged here (and on what they schedule), as if that request had asked for the shutdown
        contextvars.Context().run(self._handle_exit, sig, frame)

    def _handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # (its own state, not ``ready``: under a supervisor the workers' shared readiness is off before they are
        # signalled)
        serving = self.lifecycle.state == "serving"
        if self._delayed is None and self.shutdown_delay_s > 0 and not self.should_exit and serving:
            # (the state first, then the line: a signal that interrupts the write finds the delay begun)
            self.lifecycle.drain()
            self._delayed = (time.monotonic() + self.shutdown_delay_s, sig)  # (the tick loop begins it: on_tick)
            if self.protocol is not None:
                self.protocol.close_after_answers()
                self._to_close = True
            log.info(
                "shutting down in %g s: not ready, still serving while load balancers stop sending "
                "(shutdown delay; SIGINT: now)",
                self.shutdown_delay_s,
            )
            return
        delayed = self._delayed
        if delayed is not None and sig != signal.SIGINT:
            # a repeated SIGTERM changes nothing: systemd and ``timeout`` signal every process of the group, and
            # a supervisor's worker gets the supervisor's SIGTERM as well
            return
        self._delayed = None
        if delayed is not None:
            # SIGINT during the delay stops at once, as a second SIGINT does (and as the supervisor's forwarded
            # SIGINT means): what is in flight is cut, and the app's shutdown (the models' unload) does not run
            log.warning(
                "SIGINT during the shutdown delay: stopping now, cutting %d open connections",
                len(self.server_state.connections),
            )
            self.lifecycle.drain()
            super().handle_exit(sig, frame)
            super().handle_exit(sig, frame)
            return
        self._begin_shutdown(sig, frame, self.lifecycle.ready)

    def _begin_shutdown(self, sig: int, frame: FrameType | None, was_ready: bool, ticked: bool = False) -> None:
        if ticked and self.should_exit:
            return  # a signal came between the tick's check and this: it began the shutdown already
        if not self.should_exit and was_ready:  # (a server still starting has nothing to drain)
            log.info(
                "shutting down: not ready, not accepting; finishing %d open connections (grace period %g s)",
                len(self.server_state.connections),
                self.config.timeout_graceful_shutdown or 0,
            )
        self.lifecycle.drain()
        super().handle_exit(sig, frame)


def reserve_grpc(host: str, port: int) -> socket.socket:
    """The ``--grpc-port`` reservation: a socket bound with ``SO_REUSEPORT`` but not listening. It resolves port 0
    and refuses a port another program holds before any fork; every worker's gRPC server then binds the same
    port with ``SO_REUSEPORT`` (a socket that does not listen is given no connections). grpcio itself is not
    imported here: the supervisor forks the workers, and gRPC must not be initialised before a fork."""
    missing = [m for m in ("grpc", "grpc_health", "grpc_reflection") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"grpc_port: the gRPC front end needs the [grpc] extra (pip install 'modelapi[grpc]'); missing: "
            f"{', '.join(missing)}"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"grpc_port: cannot bind {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve_socket(
    settings: Settings,
    sock: socket.socket,
    *,
    on_ready: Callable[[DataPlane, bool], None],
    background_startup: bool = True,
    cluster_ready: Callable[[], bool] = lambda: True,
    shared: SharedState | None = None,
    metrics_socket: socket.socket | None = None,
    grpc_port: int | None = None,
) -> None:
    """Load the models and serve them on ``sock`` in this process until SIGTERM or SIGINT, then drain.
    ``metrics_socket``: the ``--metrics-port`` listener, the operations port (``/metrics`` and the health routes),
    served beside it.
    ``grpc_port``: serve the gRPC front end on it too (the port reserved by ``run``).

    With ``background_startup`` the socket is served while the models load (readiness answers 503); without,
    nothing is accepted until they have loaded. Raises what stopped the models from loading.
    """
    server: _Server | None = None

    def failed(exc: BaseException) -> None:
        if not isinstance(exc, ModelLoadError | ValueError | OSError):
            log.error("the server could not start", exc_info=exc)
        if server is not None:
            server.should_exit = True

    def ready(app: Starlette) -> None:
        auth = app.state.services.auth
        on_ready(app.state.dataplane, auth is not None and auth.enabled)

    grpc_server: GrpcServer | None = None
    shedding = Shedding()  # the protocol's refusals on the head under overload, bound to the app once it exists
    # heads under a flood: past half the queue budget of waiting, the newest first (http/pacing.py); the server's
    # budget until the app binds it to the tightest of its ready versions
    budget_s = None if settings.max_queue_ms is None else settings.max_queue_ms / 1000
    pacing = Pacing.for_budget(settings.pacing_slice_ms / 1000, budget_s) if settings.pacing_slice_ms > 0 else None
    lifecycle = Lifecycle(
        lambda: create_app(None, settings, shared=shared, freeze_heap=True, shedding=shedding, pacing=pacing),
        prepare=lambda app: app.state.dataplane.start(),
        background_startup=background_startup,
        cluster_ready=cluster_ready,
        on_ready=ready,
        on_failed=failed,
        before_shutdown=None if grpc_port is None else lambda: grpc_stopped(),
    )
    if grpc_port is not None:
        from .grpc.server import GrpcServer
        from .grpc.servicer import Frontend

        grpc_server = GrpcServer(
            settings,
            grpc_port,
            Frontend(
                services=lambda: None if lifecycle.app is None else lifecycle.app.state.services,
                ready=lambda: lifecycle.ready,
                failed=lambda: lifecycle.state == "failed",
            ),
        )

    async def grpc_stopped() -> None:
        if grpc_server is not None:
            await grpc_server.stopped()

    http_protocol = protocol_class(
        settings.header_timeout_s,
        settings.max_header_bytes,
        shedding,
        pacing,
        body_timeout_s=settings.body_timeout_s,
    )
    config = uvicorn.Config(
        lifecycle,
        log_level=settings.log_level,
        log_config=None,  # its loggers propagate to the handler logs.configure installed, in its format
        server_header=False,
        date_header=False,
        access_log=False,  # the request-context middleware writes the access log (http/middleware.py)
        lifespan="on",
        # typed int, but uvicorn hands it to asyncio.wait_for, which takes seconds as a float
        timeout_graceful_shutdown=settings.grace_period_s,  # type: ignore[arg-type]
        # slow clients (docs/security.md#limits): idle keep-alive, request head time and size; the body's
        # deadline is the middleware's, and the protocol's for a body left to come after its request's answer
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        http=http_protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **tls.uvicorn_options(settings),
    )
    if settings.log_level != "debug":
        # the banner says what uvicorn's start-up lines say; its warnings and errors still show
        logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.getLogger("uvicorn.error").level))
    server = _Server(config, lifecycle, grpc_server, metrics_socket, settings.shutdown_delay_s, http_protocol)
    # uvicorn re-raises a captured SIGTERM/SIGINT after its graceful shutdown; by then the work is done, so let
    # it land on a no-op handler and exit 0, as process supervisors expect of a clean stop.
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if lifecycle.error is None:  # uvicorn exits this way when the app's startup failed
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logs.flush()  # the access lines that wait for their loop's timer: the loop has stopped
    if lifecycle.error is not None:
        raise lifecycle.error


def run(settings: Settings, *, out: TextIO = sys.stdout) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return. Raises ModelLoadError / ValueError when the models
    cannot load, OSError when the address cannot be bound.

    One worker serves in this process; several are forked by a supervisor that stays in this process.
    """
    logs.configure(settings)  # text or JSON, uvicorn's loggers included (docs/observability.md#logs)
    tls.uvicorn_options(settings)  # unusable certificate files stop the server here, before it binds
    sock = bind(settings.host, settings.port, reuse_port=settings.workers > 1 and _REUSE_PORT)
    port = sock.getsockname()[1]
    url = base_url(settings.host, port, "https" if settings.tls_cert else "http")

    def print_banner(text: str) -> None:
        print(text, file=out, flush=True)

    # --metrics-port, the operations port: one listener on the same host, bound here once; with several workers
    # every worker accepts on it (any of them answers a scrape with every worker's totals, and a probe with its
    # own readiness, as on the main port)
    metrics_sock = None if settings.metrics_port is None else bind(settings.host, settings.metrics_port)
    extra = [] if metrics_sock is None else [metrics_sock]
    # --grpc-port: reserved here (port 0 resolved, a taken port refused before any fork); every worker's gRPC
    # server binds it with SO_REUSEPORT
    grpc_reservation = None if settings.grpc_port is None else reserve_grpc(settings.host, settings.grpc_port)
    grpc_port = None if grpc_reservation is None else int(grpc_reservation.getsockname()[1])
    grpc_address = None if grpc_port is None else base_url(settings.host, grpc_port).removeprefix("http://")
    if grpc_reservation is not None:
        extra.append(grpc_reservation)

    if settings.workers == 1:
        metrics.setup(None)
        try:
            with sock:
                serve_socket(
                    settings,
                    sock,
                    on_ready=lambda dataplane, key_needed: print_banner(
                        banner(dataplane, url, grpc_address, key_needed=key_needed)
                    ),
                    metrics_socket=metrics_sock,
                    grpc_port=grpc_port,
                )
        finally:
            for other in extra:
                other.close()
        return

    # One listening socket per worker, all bound here to the one port with SO_REUSEPORT: the kernel spreads new
    # connections evenly among them (a single shared socket lets whichever worker wakes first take a whole burst
    # of keep-alive connections). The supervisor keeps every socket open, so a socket whose worker died goes
    # on queueing its share of connections until the replacement, which inherits it, accepts them.
    sockets = [sock] * settings.workers
    # the workers' shared repository state (loads and unloads asked of one worker); this server's own file
    shared = SharedState(settings.state_dir / "run" / f"repository-{os.getpid()}.json")
    shared.reset()
    if _REUSE_PORT:
        sockets = [sock, *(bind(settings.host, port, reuse_port=True) for _ in range(settings.workers - 1))]

    # every worker's metric values, in files of this server's own directory, summed by whichever answers a
    # scrape (docs/observability.md); chosen before the fork, since prometheus-client fixes it per metric
    metrics.setup(settings.state_dir / "run" / f"metrics-{os.getpid()}")

    def worker(context: WorkerContext) -> int:
        mine = sockets[context.index]
        for other in sockets:
            if other is not mine:
                other.close()
        try:
            serve_socket(
                settings,
                mine,
                on_ready=lambda dataplane, key_needed: context.report_ready(
                    banner(dataplane, url, grpc_address, key_needed=key_needed)
                ),
                background_startup=not context.replacement,
                cluster_ready=context.cluster_ready,
                shared=shared,
                metrics_socket=metrics_sock,
                grpc_port=grpc_port,
            )
        except Exception as exc:
            context.report_failed(exc)
            return 2
        return 0

    preimport(settings)
    supervisor = Supervisor(
        settings.workers,
        worker,
        sockets=[*sockets, *extra],
        grace_period_s=settings.grace_period_s,
        shutdown_delay_s=settings.shutdown_delay_s,  # (each worker waits, then drains)
        on_ready=print_banner,
        on_exit=metrics.worker_died,  # its gauges go, its counts stay; before the replacement starts
    )
    try:
        code = supervisor.run()
    finally:
        shared.remove()
        metrics.shutdown()
    if code != 0:
        raise SystemExit(1)  # workers outlived the grace period and were killed; the supervisor logged it
