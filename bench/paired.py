"""The one-connection cells, measured in rounds that alternate the contenders, for issue 16's bounds at one
connection (CPU per request against the floor's, p50 against the floor's + 0.15 ms, the key's cost).

A single cell at one connection swings by a fifth on the shared machine, and the cells a ratio compares were
minutes apart (the floor's before modelapi's), so those ratios passed or failed by chance. Here the HTTP floor,
modelapi and modelapi with a key and metrics are served at once (all on the server's core, idle but for their
turn, as ``bench.ab --together`` serves them), and each round measures the floor first, then every modelapi cell
of the same row count, a few seconds apart: a target is the median, over the rounds, of each round's ratio (or
difference) against the same round's floor or default cell, so a drift of the machine's speed between rounds
cancels out. The table's one-connection rows are the medians of the rounds' figures.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import procfs, servers, verify, workload
from .loadgen import run_wrk
from .report import Rounds, Row

SERVER_CORE, LOAD_CORE = 0, 1


@dataclass(frozen=True)
class Cell:
    """One contender's one-connection cell: its route label, URL path and body."""

    contender: str
    route: str
    path: str
    body: workload.Body


def measure(
    specs: Sequence[servers.ServerSpec],
    cells: Sequence[Cell],
    want: dict[int, workload.Answer],
    *,
    rounds: int,
    seconds: int,
    warmup: int,
    env: dict[str, str],
    log_dir: Path,
    log: Callable[[str], None],
) -> Rounds:
    """Serve every spec at once; check each cell's answer, then measure ``rounds`` rounds: for each row count
    (in the order ``cells`` first gives it), every cell of that count in ``cells``' order, ``seconds`` each."""
    out: Rounds = {}
    by_name = {spec.name: spec for spec in specs}
    with contextlib.ExitStack() as stack:
        running = {
            spec.name: stack.enter_context(servers.serve(spec, core=SERVER_CORE, env=env, log_dir=log_dir))
            for spec in specs
        }
        for cell in cells:
            srv, spec = running[cell.contender], by_name[cell.contender]
            verify.check(
                cell.contender, cell.path, srv.host, srv.port, cell.body, want[cell.body.rows], spec.client_headers
            )
            if warmup:
                run_wrk(
                    srv.url + cell.path, cell.body, connections=16, seconds=warmup, core=LOAD_CORE,
                    headers=spec.client_headers,
                )  # fmt: skip
        log(f"one connection, {rounds} alternating rounds: answers verified")
        counts = list(dict.fromkeys(cell.body.rows for cell in cells))
        for round_no in range(rounds):
            for n in counts:
                for cell in (c for c in cells if c.body.rows == n):
                    srv, spec = running[cell.contender], by_name[cell.contender]
                    pids = procfs.tree(srv.process.pid)
                    cpu, core = procfs.cpu_seconds(pids), procfs.core_busy_seconds(SERVER_CORE)
                    got = run_wrk(
                        srv.url + cell.path, cell.body, connections=1, seconds=seconds, core=LOAD_CORE,
                        headers=spec.client_headers,
                    )  # fmt: skip
                    cpu, core = procfs.cpu_seconds(pids) - cpu, procfs.core_busy_seconds(SERVER_CORE) - core
                    row = Row(cell.contender, cell.route, n, 1, got.rps, got.rows_per_s, got.p50_ms, got.p99_ms)
                    # as every other cell's (run.measure_server): the share of the core that anything but the
                    # server measured took, the idle contenders beside it included
                    row = replace(
                        row,
                        errors=got.errors,
                        cpu_us_per_req=cpu / got.requests * 1e6 if got.requests else None,
                        other_load_pct=max(0.0, core - cpu) / got.seconds * 100 if got.seconds else None,
                    )
                    out.setdefault((cell.contender, cell.route, n), []).append(row)
            log(f"one connection, round {round_no + 1} of {rounds} done")
    return out


def medians(rounds: Rounds) -> list[Row]:
    """One table row per cell: the median of each figure over its rounds (the errors: their sum)."""
    rows: list[Row] = []
    for (contender, route, n), runs in rounds.items():
        cpus = [r.cpu_us_per_req for r in runs if r.cpu_us_per_req is not None]
        others = [r.other_load_pct for r in runs if r.other_load_pct is not None]
        rows.append(
            Row(
                contender, route, n, 1,
                statistics.median(r.rps for r in runs),
                statistics.median(r.rows_per_s for r in runs),
                statistics.median(r.p50_ms for r in runs),
                statistics.median(r.p99_ms for r in runs),
                errors=sum(r.errors for r in runs),
                cpu_us_per_req=statistics.median(cpus) if cpus else None,
                other_load_pct=statistics.median(others) if others else None,
            )
        )  # fmt: skip
    return rows
