"""What the scaling bench's parts share: the plan, one timed wrk cell against a server, and the outcome.

Part A (worker scaling, ``scaling.py``) and part B (batching on a GPU, ``gpu_batching.py``) each add their
cells' ``Result``s and failures to one ``Outcome``, which ``scaling.py`` renders and writes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procfs, servers, verify, workload
from .loadgen import Cell, LoadError, run_wrk

ROW_COUNTS: tuple[int, ...] = (1, 32)
#: the errors that end one server's cells but not the run
CellError = (servers.ServerError, verify.WrongAnswer, LoadError, subprocess.SubprocessError, OSError)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    seconds: int
    warmup: int
    workers: tuple[int, ...]
    server_cores: str  # a taskset -c list
    load_cores: str
    threads: int
    connections: int
    cuda_connections: int
    torch_device: str
    ready_timeout: float
    out: Path
    log: Log


@dataclass(frozen=True)
class Result:
    """One timed cell. ``label`` is the worker count (part A) or the batching mode (part B)."""

    part: str
    label: str
    rows: int
    connections: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float | None
    processes: int
    rows_per_batch: float | None = None  # part B: the server's mean batch size over the warm-up and timed cell


@dataclass
class Outcome:
    meta: dict[str, Any]
    results: list[Result]
    inprocess: dict[str, float] | None = None
    failures: list[str] | None = None
    cuda_note: str = ""
    target: str = ""  # part B's verdict on the target, one line

    def fail(self, message: str) -> None:
        self.failures = [*(self.failures or []), message]


def measure(
    plan: Plan, srv: servers.Running, url_path: str, body: workload.Body, connections: int
) -> tuple[Cell, float | None]:
    """One warmed-up wrk cell against ``srv``, and the server's CPU time per request in microseconds."""
    url = srv.url + url_path
    if plan.warmup:
        run_wrk(url, body, connections=connections, seconds=plan.warmup, core=plan.load_cores, threads=plan.threads)
    pids = procfs.tree(srv.process.pid)
    cpu = procfs.cpu_seconds(pids)
    cell = run_wrk(url, body, connections=connections, seconds=plan.seconds, core=plan.load_cores, threads=plan.threads)
    cpu = procfs.cpu_seconds(pids) - cpu
    return cell, (cpu / cell.requests * 1e6 if cell.requests else None)


def result(
    part: str, label: str, body: workload.Body, connections: int, cell: Cell, cpu_us: float | None, n: int
) -> Result:
    return Result(
        part, label, body.rows, connections, cell.rps, cell.rows_per_s, cell.p50_ms, cell.p99_ms, cell.errors, cpu_us, n
    )


def describe(exc: BaseException) -> str:
    """An exception for the log and the failures list, with a failed subprocess's stderr."""
    detail = getattr(exc, "stderr", None)
    return f"{type(exc).__name__}: {exc}" + (f"\n{detail.strip()}" if isinstance(detail, str) and detail else "")
