"""A Redis server of the test's own on a free loopback port, which a test may stop and start again (never the
machine's Redis on 6379). Skips where redis-server is not installed; fails in CI (CI=true)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .ports import free_port

NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@dataclass
class OwnRedis:
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    persistent: bool = False  # save to an RDB file on stop, load it on start (what a stop then loses: nothing)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port and wait until it answers; ``persistent``: with what it saved."""
        keep = ("--save", "3600 1", "--appendonly", "no") if self.persistent else NO_PERSISTENCE
        args = ["--port", str(self.port), "--bind", "127.0.0.1", *keep, "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            ["redis-server", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def own_redis(directory: Path, persistent: bool = False) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    server = OwnRedis(directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
