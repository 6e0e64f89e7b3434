"""The load generator: wrk (closed loop, keep-alive; one thread unless asked) pinned to its core(s), read as JSON."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from .workload import Body

SCRIPT = Path(__file__).with_name("report.lua")
MARK = "WRK_JSON "


@dataclass(frozen=True)
class Cell:
    """One measured cell: a contender and route at one concurrency and body size."""

    requests: int
    seconds: float
    rows_per_request: int
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request


class LoadError(RuntimeError):
    pass


def require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LoadError(f"{tool} is not installed; {hint}")
    return path


def run_wrk(
    url: str,
    body: Body,
    *,
    connections: int,
    seconds: int,
    core: int | str,
    timeout_s: int = 10,
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> Cell:
    """``connections`` keep-alive connections, each sending ``body`` again as soon as the answer arrives.

    ``core`` is one core or a ``taskset -c`` list (``"8-15"``); ``threads`` wrk threads share the connections.
    """
    wrk = require("wrk", "install it with: apt-get install -y wrk")
    cmd = [
        "taskset", "-c", str(core), wrk,
        "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{timeout_s}s",
        *(arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}: {v}")),
        "-s", str(SCRIPT), url, "--",
        str(body.path), body.content_type, "" if body.header_length is None else str(body.header_length),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise LoadError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    r = orjson.loads(line[len(MARK) :])
    errors = sum(int(r[k]) for k in r if k.startswith("errors_"))
    return Cell(
        requests=int(r["requests"]) - int(r["errors_status"]),
        seconds=r["duration_us"] / 1e6,
        rows_per_request=body.rows,
        p50_ms=r["p50_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        errors=errors,
    )


def run_grpc(address: str, body: Body, *, connections: int, seconds: int, core: int | str) -> Cell:
    """The gRPC counterpart of ``run_wrk`` (``grpc_load.py``): ``body.path`` holds a serialized ModelInferRequest."""
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "bench.grpc_load"]
    cmd += [address, str(body.path), str(connections), str(seconds)]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=repo)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise LoadError(f"the gRPC load generator failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    r = orjson.loads(line[len(MARK) :])
    return Cell(
        requests=int(r["requests"]) - int(r["errors_status"]),
        seconds=r["duration_us"] / 1e6,
        rows_per_request=body.rows,
        p50_ms=r["p50_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        errors=int(r["errors_status"]),
    )
