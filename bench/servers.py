"""Start a server under test pinned to its core(s), wait until it answers, and always stop it (its whole group)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import procfs

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ServerSpec:
    """A command to serve on a port (``{port}`` in ``argv`` is replaced) and the path that says it is ready."""

    name: str
    argv: tuple[str, ...]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    #: headers every request to this server carries (an API key)
    client_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    spec: ServerSpec
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def workers(self) -> list[int]:
        """The processes that serve: the children of a supervisor, or the process itself when it has none."""
        kids = procfs.children(self.process.pid)
        return kids or [self.process.pid]

    def memory(self) -> list[Memory]:
        """Resident memory of every process of the server: the serving workers and any supervisor."""
        workers = self.workers()
        out = []
        for pid in procfs.tree(self.process.pid):
            sm = procfs.smaps(pid)
            role = "worker" if pid in workers else "supervisor"
            out.append(Memory(role, procfs.rss_bytes(pid), sm.get("pss", 0), sm.get("uss", 0)))
        return out


@dataclass(frozen=True)
class Memory:
    role: str  # "worker" or "supervisor"
    rss: int
    pss: int
    uss: int

    def text(self) -> str:
        mib = 2**20
        return f"{self.role}: RSS {self.rss / mib:.1f} MiB, PSS {self.pss / mib:.1f} MiB, USS {self.uss / mib:.1f} MiB"


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def modelapi(
    name: str,
    models: Sequence[Path | str],
    *extra: str,
    env: dict[str, str] | None = None,
    client_headers: dict[str, str] | None = None,
) -> ServerSpec:
    """modelapi as a user gets it: default log level (``info``, one access line per request), metrics on."""
    argv = (*modelapi_command(), "serve", *map(str, models), "--host", "127.0.0.1", "--port", "{port}", *extra)
    return ServerSpec(name, argv, "/v2/health/ready", env or {}, client_headers or {})


def modelapi_production(name: str, models: list[Path], state_dir: Path) -> ServerSpec:
    """modelapi as production runs it: an API key required on every request (created in ``state_dir``'s key
    store, looked up by the server again at most every key_cache_s) and metrics on (the default). The key's rate
    limit stays on, above what one core can serve (its default, 100 requests/s, would turn the load into 429s),
    so its token bucket is paid for on every request as in production."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODELAPI_STATE_DIR": str(state_dir)}
    made = subprocess.run(
        [*modelapi_command(), "keys", "create", "--name", "bench"], env=env, capture_output=True, text=True, check=True
    )
    key = made.stdout.strip()
    extra_env = {"MODELAPI_STATE_DIR": str(state_dir)}
    limit = ("--rate-limit", "1000000", "--rate-burst", "1000000")
    headers = {"Authorization": f"Bearer {key}"}
    return modelapi(name, models, "--auth", "on", *limit, env=extra_env, client_headers=headers)


def floor(model: Path) -> ServerSpec:
    """The HTTP floor (``floor.py``): uvicorn with httptools and uvloop, one process, no access log, and no
    Server or Date header (modelapi sends neither)."""
    argv = (
        str(VENV_BIN / "uvicorn"), "bench.floor:app", "--host", "127.0.0.1", "--port", "{port}",
        "--http", "httptools", "--loop", "uvloop", "--workers", "1", "--no-access-log", "--log-level", "warning",
        "--no-server-header", "--no-date-header",
    )  # fmt: skip
    return ServerSpec("HTTP floor", argv, "/health", {"BENCH_MODEL": str(model)})


def socket_floor() -> ServerSpec:
    """The socket floor (``socket_floor.py``): uvloop and httptools, a constant answer per request, no ASGI."""
    argv = (sys.executable, "-m", "bench.socket_floor", "--port", "{port}")
    return ServerSpec("socket floor", argv, "/health", {})


def modelapi_command() -> tuple[str, ...]:
    """The ``modelapi`` console script next to this Python, or ``python -m modelapi`` where none is installed."""
    script = VENV_BIN / "modelapi"
    return (str(script),) if script.is_file() else (sys.executable, "-m", "modelapi")


def flask_gunicorn(model: Path, workers: int = 2) -> ServerSpec:
    argv = (
        str(VENV_BIN / "gunicorn"), "-w", str(workers), "-b", "127.0.0.1:{port}",
        "--log-level", "warning", "bench.baseline_flask:app",
    )  # fmt: skip
    return ServerSpec("flask+gunicorn", argv, "/health", {"BENCH_MODEL": str(model)})


@contextlib.contextmanager
def serve(
    spec: ServerSpec, *, core: int | str, env: dict[str, str], log_dir: Path, timeout: float = 60.0
) -> Iterator[Running]:
    """Run ``spec`` under ``taskset -c core`` in its own process group; kill the group on the way out.

    ``core`` is one core or a ``taskset -c`` list (``"0-7"``). The repository goes first on ``PYTHONPATH``,
    ahead of any path ``env`` already has there (packages installed with ``pip --target``, say).
    """
    port = free_port()
    argv = ["taskset", "-c", str(core), *(a.replace("{port}", str(port)) for a in spec.argv)]
    log_path = log_dir / f"server-{spec.name.replace(' ', '_').replace('/', '_')}.log"
    repo = Path(__file__).resolve().parents[1]
    pythonpath = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    full_env = {**env, **spec.env, "PYTHONPATH": pythonpath}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=repo, start_new_session=True
        )
    running = Running(spec, "127.0.0.1", port, proc, log_path)
    try:
        _wait_ready(running, timeout)
        yield running
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _wait_ready(running: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            tail = running.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ServerError(
                f"{running.spec.name} exited with {running.process.returncode}; {running.log_path} ends with:\n"
                + "\n".join(tail)
            )
        try:
            conn = http.client.HTTPConnection(running.host, running.port, timeout=2)
            conn.request("GET", running.spec.ready_path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise ServerError(f"{running.spec.name} was not ready after {timeout:.0f} s; see {running.log_path}")
