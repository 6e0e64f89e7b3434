"""The real server in a process group of its own, for tests that kill it hard; and which worker answered.

``tests/e2e/server.py``'s ``serve`` starts the server in the test runner's own process group, so a test cannot
``killpg`` it; ``serve_in_session`` starts it as a session leader instead (supervisor and workers share the
group), and ``kill_group`` SIGKILLs all of them at once, as an OOM killer or a power cut would::

    with serve_in_session(repo, "--workers", "2", tmp_dir=tmp_path) as server:
        ...
        kill_group(server)          # nothing gets to clean up
    with serve_in_session(repo, port=server.port, ...) as again: ...

``answering_pid`` says which process holds the server's end of an open client connection (Linux ``/proc``):
with ``--workers N`` that is the worker the kernel gave the connection to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .ports import free_port

TESTS_DIR = Path(__file__).resolve().parents[1]


@dataclass
class SessionServer:
    url: str
    port: int
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The server's child processes: its workers when it runs with ``--workers N`` (N > 1)."""
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return []
        return sorted(int(p) for p in text.split())


def wait_ready(server: SessionServer, timeout: float = 60.0) -> None:
    """Until ``/v2/health/ready`` answers 200; ``RuntimeError`` with the log if the server exits or stays unready."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")
        time.sleep(0.05)


def kill_group(server: SessionServer, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the server's whole process group (supervisor and workers) and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, sig)
    server.process.wait(timeout=30)
    if sig == signal.SIGKILL:  # orphaned workers die with the group; wait until none is left
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(server.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


#: how many times ``serve_in_session`` starts a server whose picked port was taken before it bound it
STARTS = 3


@contextlib.contextmanager
def serve_in_session(
    *args: str,
    tmp_dir: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[SessionServer]:
    """``python -m modelapi serve ARGS --host 127.0.0.1 --port P`` as a new session, once ready; afterwards
    SIGTERM to its group (if still running), then SIGKILL whatever is left. ``port``: that port (a restart on the
    port a test's clients know), else one picked free, and another if that one was taken before the server bound
    it (any socket on the machine, another test's clients among them, may take it meanwhile)."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }

    def spawn() -> SessionServer:
        chosen = port or free_port()
        log_path = tmp_dir / f"modelapi-server-{chosen}-{time.monotonic_ns()}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelapi", "serve", *args, "--host", "127.0.0.1", "--port", str(chosen)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=full_env,
                text=True,
                start_new_session=True,
            )
        return SessionServer(f"http://127.0.0.1:{chosen}", chosen, proc, log_path)

    server = spawn()
    try:
        for start in range(1, STARTS + 1):
            try:
                wait_ready(server, timeout)
                break
            except RuntimeError:
                taken = server.process.poll() is not None and "Address already in use" in server.log()
                if port is not None or not taken or start == STARTS:
                    raise
                server = spawn()
        yield server
    finally:
        _stop(server.process)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the server's group if it still runs, then SIGKILL whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the IPv4 loopback socket ``127.0.0.1:local_port <-> 127.0.0.1:remote_port`` (/proc/net/tcp)."""
    want_local = f"0100007F:{local_port:04X}"
    want_remote = f"0100007F:{remote_port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                return int(fields[9])
    return None


def answering_pid(client: socket.socket, candidates: Iterable[int]) -> int | None:
    """Which of ``candidates`` holds the server's end of the open connection ``client`` (None: none of them)."""
    client_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    inode = _tcp_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) == target:
                    return pid
            except OSError:
                continue
    return None
