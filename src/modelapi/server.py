"""From Settings to a running server: load the models, bind, print the banner, serve with uvicorn."""

from __future__ import annotations

import logging
import shlex
import signal
import socket
import sys
from typing import Any, TextIO

import uvicorn

from . import jsonutil
from .dataplane import DataPlane
from .http.app import create_app
from .models.base import Model
from .models.registry import load_model
from .models.trust import Trust
from .settings import Settings

log = logging.getLogger("modelapi")


def load_models(settings: Settings) -> list[Model]:
    """The models Settings name, or the bundled demo model when it names none."""
    specs: list[str] = list(settings.models)
    if not specs:
        from .demo import DEMO_MODEL_PATH

        specs = [str(DEMO_MODEL_PATH)]
    if len(settings.names) > len(specs):
        raise ValueError(f"{len(settings.names)} names given for {len(specs)} models; give at most one name per model")
    trust = Trust(trust_pickle=settings.trust_pickle, sha256=frozenset(settings.sha256))
    names: list[str | None] = [*settings.names, *([None] * (len(specs) - len(settings.names)))]
    return [load_model(spec, name=name, trust=trust) for spec, name in zip(specs, names, strict=True)]


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def banner(dataplane: DataPlane, url: str) -> str:
    models = list(dataplane.models.values())
    first = models[0]
    route = "/predict" if len(models) == 1 else f"/models/{first.name}/predict"
    body = jsonutil.dumps(first.signature.example_record()).decode()
    lines = [
        "",
        f"modelapi is serving {len(models)} model{'s' if len(models) != 1 else ''} at {url}",
        *(f"  - {m.name} ({m.platform}, version {m.version}): {url}/models/{m.name}" for m in models),
        f"Interactive docs: {url}/docs      OpenAPI: {url}/openapi.json",
        "Try it:",
        f"  curl -s {url}{route} -H 'Content-Type: application/json' -d {shlex.quote(body)}",
        "Press Ctrl+C to stop.",
        "",
    ]
    return "\n".join(lines)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Any) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_ready()


def run(settings: Settings, *, out: TextIO = sys.stdout) -> None:
    """Serve until interrupted. Raises ModelLoadError / ValueError before binding when models cannot load."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    models = load_models(settings)
    app = create_app(models, settings)
    dataplane: DataPlane = app.state.dataplane
    sock = bind(settings.host, settings.port)
    url = base_url(settings.host, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level=settings.log_level, server_header=False, date_header=False)

    def ready() -> None:
        print(banner(dataplane, url), file=out, flush=True)

    server = _Server(config, ready)
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown; by then the work is done, so let that
    # land on a no-op handler and exit 0, as process supervisors expect of a clean stop.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
