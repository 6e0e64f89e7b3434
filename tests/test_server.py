"""The server runner's parts that need no subprocess: the listening socket, URLs, settings for workers."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn
import uvloop
from pydantic import ValidationError
from starlette.applications import Starlette

from modelapi import logs
from modelapi.http.lifecycle import Lifecycle
from modelapi.security.slow_clients import GuardedHttpToolsProtocol, protocol_class
from modelapi.server import _Server, base_url, bind
from modelapi.settings import Settings


def _nodelay_of_accepted_connection(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> int:
    """Serve ``bind()``'s socket on an event loop as uvicorn does; TCP_NODELAY as set on the accepted side."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert seen, "no connection was accepted"
    return seen[0]


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_accepted_connections_have_nagle_off(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Without TCP_NODELAY a keep-alive response's second write waits ~40 ms for the client's delayed ACK."""
    assert _nodelay_of_accepted_connection(loop_factory) != 0


def test_the_listener_is_tcp_and_inheritable() -> None:
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.get_inheritable()


def test_base_url_shows_an_address_a_browser_can_open() -> None:
    assert base_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert base_url("::", 8000) == "http://[::1]:8000"
    assert base_url("::1", 81) == "http://[::1]:81"
    assert base_url("10.1.2.3", 80) == "http://10.1.2.3:80"


def test_worker_and_grace_settings() -> None:
    assert Settings().workers == 1
    assert Settings().grace_period_s == 30.0
    assert Settings(workers=4, grace_period_s=0.5).workers == 4
    with pytest.raises(ValidationError, match="workers"):
        Settings(workers=0)
    with pytest.raises(ValidationError, match="grace_period_s"):
        Settings(grace_period_s=-1)


def test_the_supervisors_preimport_of_skops_leaves_torch_out() -> None:
    """Workers fork from the supervisor: what it imports, every worker holds (PyTorch would be ~230 MiB)."""
    import subprocess
    import sys

    pytest.importorskip("torch")  # without PyTorch installed there is nothing to leave out

    code = (
        "import sys; from modelapi.demo import DEMO_MODEL_PATH; from modelapi.server import preimport; "
        "from modelapi.settings import Settings; preimport(Settings(models=[str(DEMO_MODEL_PATH)])); "
        "print('skops.io' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True False"


def test_the_banner_names_each_versions_format_where_they_differ(tmp_path: Path) -> None:
    """``mixed`` serves versions 1 and 2 as scikit-learn and 3 as ONNX: each format after its versions;
    ``same`` serves two scikit-learn versions: one format, as before."""
    import numpy as np
    from skl2onnx import to_onnx

    from helpers.repo import N_FEATURES, ModelRepo, classifier, skops_bytes
    from modelapi.dataplane import DataPlane
    from modelapi.server import banner

    repo = ModelRepo(tmp_path / "models")
    for version in (1, 2):
        repo.version("mixed", version, skops_bytes(f"v{version}"))
        repo.version("same", version, skops_bytes(f"s{version}"))
    onnx = to_onnx(classifier("v3"), np.zeros((1, N_FEATURES), np.float32), options={"zipmap": False})
    repo.version("mixed", 3, onnx.SerializeToString(), "model.onnx")
    repo.toml("mixed", 'version_policy = "all"\n')
    repo.toml("same", 'version_policy = "all"\n')

    async def shown() -> str:
        plane = DataPlane.from_settings(Settings(models=[str(repo.root)]))
        await plane.start()
        try:
            return banner(plane, "http://127.0.0.1:17000")
        finally:
            await plane.close()

    lines = asyncio.run(shown()).splitlines()
    assert "  - mixed (versions 1, 2: sklearn; 3: onnx): http://127.0.0.1:17000/models/mixed" in lines
    assert "  - same (sklearn, version 1, 2): http://127.0.0.1:17000/models/same" in lines


def test_when_the_shutdown_delay_begins_the_requests_already_read_close_their_connections_on_the_next_tick() -> None:
    """The class's flag takes the requests read from the signal on; those read before it are marked on the loop's
    next tick (not in the signal handler, which may have interrupted a connection's own code): the last one read
    and those pipelined, but not one whose answer has begun (its head went out without ``connection: close``)."""
    config = uvicorn.Config(Starlette(), lifespan="off", log_config=None)
    config.load()
    lifecycle = Lifecycle(Starlette)
    lifecycle.state = "serving"
    protocol = protocol_class(10.0, 65536)
    server = _Server(config, lifecycle, shutdown_delay_s=30.0, protocol=protocol)

    loop = asyncio.new_event_loop()

    def connection(started: bool, pipelined: int = 0) -> GuardedHttpToolsProtocol:
        conn = protocol(config=config, server_state=server.server_state, app_state={}, _loop=loop)
        conn.cycle = SimpleNamespace(response_started=started, keep_alive=True)  # type: ignore[assignment]
        conn.pipeline.extend((SimpleNamespace(keep_alive=True), None) for _ in range(pipelined))  # type: ignore[misc]
        server.server_state.connections.add(conn)
        return conn

    waiting, answering = connection(False, pipelined=2), connection(True)
    server.server_state.connections.add(object())  # type: ignore[arg-type]  # (another protocol's)
    server.handle_exit(signal.SIGTERM, None)
    assert protocol.closing and not GuardedHttpToolsProtocol.closing
    assert waiting.cycle.keep_alive  # not in the handler
    try:
        loop.run_until_complete(server.on_tick(1))
    finally:
        loop.close()
    assert not waiting.cycle.keep_alive and not any(c.keep_alive for c, _ in waiting.pipeline)
    assert answering.cycle.keep_alive
    assert not server.should_exit  # (still serving: the delay has 30 s to run)


def test_the_shutdown_line_names_no_request_though_the_signal_came_during_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A signal handler runs in the context of the code it interrupted: SIGTERM while a request's task runs must
    not put that request's id on the shutdown's lines."""
    config = uvicorn.Config(Starlette(), lifespan="off", log_config=None)
    lifecycle = Lifecycle(Starlette)
    lifecycle.state = "serving"
    server = _Server(config, lifecycle)
    request = SimpleNamespace(request_id="a-request", model=None, version=None)
    logs.CONTEXT.set(request)  # type: ignore[arg-type]
    handler = logs.make_handler("json")
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("modelapi")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="modelapi"):
            server.handle_exit(signal.SIGTERM, None)
    finally:
        logger.removeHandler(handler)
        logs.CONTEXT.set(None)
    (line,) = [r for r in records if "shutting down" in r.getMessage()]
    assert getattr(line, "request_id", None) is None
    assert server.should_exit and not lifecycle.ready
