"""One helper that starts the real server on a free loopback port and stops it cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers.ports import free_port

TESTS_DIR = Path(__file__).resolve().parents[1]


#: tries at starting a server whose port was taken between picking and binding it
STARTS = 3


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_with(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds ``text`` (or as it is after ``timeout``): the access log's line for a request is
        written after its response has gone, so a client that has its answer may read the log before it."""
        deadline = time.monotonic() + timeout
        log = self.log()
        while text not in log and time.monotonic() < deadline:
            time.sleep(0.02)
            log = self.log()
        return log

    def worker_pids(self) -> list[int]:
        """The server's child processes: its workers when it runs with ``--workers N`` (N > 1)."""
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return []
        return sorted(int(p) for p in text.split())


@contextlib.contextmanager
def serve(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    tmp_dir: Path | None = None,
    tls: ssl.SSLContext | None = None,
    until: str = "/v2/health/ready",
) -> Iterator[RunningServer]:
    """Run ``python -m modelapi serve ARGS --port P`` until it is ready; stop it with SIGTERM afterwards.

    ``tls``: the server serves HTTPS (ARGS carry ``--tls-cert``...); readiness is polled with this client context.
    ``until``: the path polled until it answers 200 (``/v2/health/live``: until the server listens, its models
    perhaps still loading).
    """
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    log_dir = tmp_dir or Path(os.environ.get("TMPDIR", "/tmp"))

    def spawn() -> RunningServer:
        port = free_port()
        log_path = log_dir / f"modelapi-server-{port}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelapi", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=full_env,
                text=True,
            )
        return RunningServer(f"{'https' if tls else 'http'}://127.0.0.1:{port}", proc, log_path)

    server = spawn()
    starts = 1
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.process.poll() is not None:
                # the port was free when picked, but any socket on the machine (another test's clients) may take
                # it before the server binds it: then the server exits at once, and another port is tried
                if starts < STARTS and "Address already in use" in server.log():
                    server = spawn()
                    starts += 1
                    continue
                raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + until, timeout=1.0, verify=tls or True).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        proc = server.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
