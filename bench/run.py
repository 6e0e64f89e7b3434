"""``make bench``: modelapi against the in-process limit, the HTTP floor and Flask + gunicorn, on 2 cores.

The server under test runs on core 0, wrk on core 1 (closed loop, keep-alive, one thread). Every server's
answers are checked against the in-process model before it is timed. Prints the table and the issue's target
ratios (PASS/FAIL), and writes both to ``bench/results/bench-<UTC time>.{json,md}``.

    python -m bench.run            # 10 s per cell, about 13 minutes
    python -m bench.run --quick    # 1 s per cell, a smoke check of the harness
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from . import environment, overload, paired, procfs, report, servers, verify, workload
from .loadgen import LoadError, require, run_grpc, run_wrk
from .report import Row

SERVER_CORE, LOAD_CORE = 0, 1
ROW_COUNTS: tuple[int, ...] = (1, 32)
CONCURRENCIES: tuple[int, ...] = (1, 16, 64)
#: the concurrencies of the floor's and modelapi's own cells: their one-connection cells are paired (below)
MANY: tuple[int, ...] = (16, 64)
RESULTS = Path(__file__).with_name("results")
#: modelapi route label -> (URL path for model NAME, body kind)
ROUTES = {
    "friendly JSON": ("/models/{name}/predict", "rest"),
    "V2 JSON": ("/v2/models/{name}/infer", "v2-json"),
    "V2 binary": ("/v2/models/{name}/infer", "v2-binary"),
}
Log = Callable[[str], None]
METRICS_OFF = report.METRICS_OFF
LOG_ALL = report.LOG_ALL
#: (route label, URL path, body, concurrencies) for one server
CellPlan = tuple[str, str, workload.Body, tuple[int, ...]]


@dataclass(frozen=True)
class Plan:
    seconds: int
    warmup: int
    workers: int
    log: Log
    #: alternating rounds of the one-connection cells, and each cell's seconds in a round
    rounds: int = 5
    round_seconds: int = 2
    #: rounds of the overload cell (``bench.overload --rounds``)
    overload_rounds: int = 3


def measure_inprocess(
    plan: Plan, work: workload.Workload, env: dict[str, str], label: str = "JSON loop"
) -> tuple[list[Row], int]:
    """The JSON+predict loop for each body size; also the model's footprint (that process's RSS)."""
    rows: list[Row] = []
    footprint = 0
    for n in ROW_COUNTS:
        body = work.body("rest", n)
        cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "bench.inprocess"]
        cmd += [str(work.model_path), str(body.path), str(plan.seconds)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=_repo(), timeout=600)
        r = orjson.loads(proc.stdout)
        rps = r["requests"] / r["seconds"]
        cpu_us = r["cpu_seconds"] / r["requests"] * 1e6
        row = Row("in-process", label, n, None, rps, rps * n, r["p50_us"] / 1e3, r["p99_us"] / 1e3)
        rows.append(replace(row, cpu_us_per_req=cpu_us, other_load_pct=r["other_load_pct"]))
        footprint = max(footprint, int(r["rss_bytes"]))
        plan.log(f"in-process {n}-row ({label}): {rps:,.0f} req/s")
    return rows, footprint


def measure_server(
    plan: Plan,
    spec: servers.ServerSpec,
    cells: list[CellPlan],
    want: dict[int, workload.Answer],
    env: dict[str, str],
    log_dir: Path,
) -> tuple[list[Row], list[servers.Memory]]:
    """Serve ``spec``; check every (route, path, body) answer, then time each at its concurrencies.

    Returns the rows and the memory of each of the server's processes after the load.
    """
    out: list[Row] = []
    with servers.serve(spec, core=SERVER_CORE, env=env, log_dir=log_dir) as srv:
        for _, path, body, _ in cells:
            verify.check(spec.name, path, srv.host, srv.port, body, want[body.rows], spec.client_headers)
        plan.log(f"{spec.name}: answers verified")
        for route, path, body, concurrencies in cells:
            if plan.warmup:
                run_wrk(
                    srv.url + path, body, connections=16, seconds=plan.warmup, core=LOAD_CORE,
                    headers=spec.client_headers,
                )  # fmt: skip
            for c in concurrencies:
                pids = procfs.tree(srv.process.pid)
                cpu, core = procfs.cpu_seconds(pids), procfs.core_busy_seconds(SERVER_CORE)
                cell = run_wrk(
                    srv.url + path, body, connections=c, seconds=plan.seconds, core=LOAD_CORE,
                    headers=spec.client_headers,
                )  # fmt: skip
                cpu, core = procfs.cpu_seconds(pids) - cpu, procfs.core_busy_seconds(SERVER_CORE) - core
                row = Row(spec.name, route, body.rows, c, cell.rps, cell.rows_per_s, cell.p50_ms, cell.p99_ms)
                row = replace(
                    row,
                    errors=cell.errors,
                    cpu_us_per_req=cpu / cell.requests * 1e6 if cell.requests else None,
                    other_load_pct=max(0.0, core - cpu) / cell.seconds * 100 if cell.seconds else None,
                )
                out.append(row)
                plan.log(f"{spec.name} {route} {body.rows}-row c{c}: {row.rps:,.0f} req/s, p99 {row.p99_ms:.2f} ms")
        memory = srv.memory()
    return out, memory


def measure_grpc(
    plan: Plan,
    model: Path,
    want: dict[int, workload.Answer],
    env: dict[str, str],
    log_dir: Path,
    tmp: Path,
    inputs: np.ndarray,
) -> list[Row]:
    """modelapi with ``--grpc-port``: the Open Inference Protocol over gRPC (raw contents, as tritonclient sends
    them), at each row count and concurrency, beside V2 over HTTP. The load generator is ``grpc_load.py``."""
    from . import grpc_load  # grpcio: the [grpc] extra

    port = servers.free_port()
    address = f"127.0.0.1:{port}"
    spec = servers.modelapi("modelapi", [model], "--grpc-port", str(port))
    bodies = {}
    for n in ROW_COUNTS:
        path = tmp / f"grpc-{n}.bin"
        path.write_bytes(grpc_load.request_bytes("logreg", inputs[:n]))
        bodies[n] = workload.Body("grpc", n, path, "application/grpc")
    out: list[Row] = []
    with servers.serve(spec, core=SERVER_CORE, env=env, log_dir=log_dir) as srv:
        for n, body in bodies.items():
            got = grpc_load.parse(grpc_load.call(address, body.data()))
            verify.compare(f"modelapi gRPC ({n} rows)", got, want[n], n)
        plan.log("modelapi gRPC: answers verified")
        for n, body in bodies.items():
            if plan.warmup:
                run_grpc(address, body, connections=16, seconds=plan.warmup, core=LOAD_CORE)
            for c in CONCURRENCIES:
                pids = procfs.tree(srv.process.pid)
                cpu = procfs.cpu_seconds(pids)
                cell = run_grpc(address, body, connections=c, seconds=plan.seconds, core=LOAD_CORE)
                cpu = procfs.cpu_seconds(pids) - cpu
                row = Row("modelapi", "gRPC raw", n, c, cell.rps, cell.rows_per_s, cell.p50_ms, cell.p99_ms)
                per_request = cpu / cell.requests * 1e6 if cell.requests else None
                row = replace(row, errors=cell.errors, cpu_us_per_req=per_request)
                out.append(row)
                plan.log(f"modelapi gRPC {n}-row c{c}: {row.rps:,.0f} req/s, p99 {row.p99_ms:.2f} ms")
    return out


def measure_one_connection(
    plan: Plan,
    work: workload.Workload,
    want: dict[int, workload.Answer],
    env: dict[str, str],
    log_dir: Path,
    state: Path,
) -> report.Rounds:
    """The floor, modelapi and modelapi with a key and metrics at one connection, served at once and measured in
    alternating rounds (``bench/paired.py``), for issue 16's one-connection bounds."""
    specs = [
        servers.floor(work.model_path),
        servers.modelapi("modelapi", [work.model_path]),
        servers.modelapi_production(report.PRODUCTION, [work.model_path], state),
    ]
    cells = []
    for n in ROW_COUNTS:
        cells.append(paired.Cell(report.FLOOR, "/predict", "/predict", work.body("rest", n)))
        for contender in ("modelapi", report.PRODUCTION):
            for route, (path, kind) in ROUTES.items():
                cells.append(paired.Cell(contender, route, path.format(name="logreg"), work.body(kind, n)))
    return paired.measure(
        specs, cells, want, rounds=plan.rounds, seconds=plan.round_seconds, warmup=plan.warmup, env=env,
        log_dir=log_dir, log=plan.log,
    )  # fmt: skip


def modelapi_cells(
    work: workload.Workload, name: str, routes: list[str], row_counts: tuple[int, ...], concurrencies: tuple[int, ...]
) -> list[CellPlan]:
    return [
        (route, ROUTES[route][0].format(name=name), work.body(ROUTES[route][1], n), concurrencies)
        for n in row_counts
        for route in routes
    ]


def run(plan: Plan, stamp: str, command: str) -> int:
    for tool, hint in (("wrk", "apt-get install -y wrk"), ("taskset", "apt-get install -y util-linux")):
        require(tool, f"install it with: {hint}")
    if len(os.sched_getaffinity(0)) < 2:
        raise LoadError("the bench needs 2 cores: one for the server, one for wrk")
    os.sched_setaffinity(0, {LOAD_CORE})  # the harness itself stays off the server's core
    env = environment.bench_env()
    features = environment.modelapi_features(env)
    meta: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "commit": _commit(),
        "seconds per cell": plan.seconds,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; server on core "
        f"{SERVER_CORE}, wrk on core {LOAD_CORE}; load average before: {os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
        "blas": environment.blas_info(env),
        "thread env": {k: env[k] for k in environment.THREAD_VARS},
        "modelapi --workers": features.workers,
        "batching switch": "none found" if features.batching_off is None else features.batching_off,
    }
    rows: list[Row] = []
    memory: dict[str, list[servers.Memory]] = {}
    with tempfile.TemporaryDirectory(prefix="modelapi-bench-") as tmp:
        log_dir = RESULTS / f"logs-{stamp}"
        log_dir.mkdir(parents=True, exist_ok=True)
        work = workload.build(Path(tmp), ROW_COUNTS)
        plan.log("models trained, bodies written")
        want = {n: workload.expected(work.model_path, work.rows[:n]) for n in ROW_COUNTS}
        forest_want = {1: workload.expected(work.forest_path, work.rows[:1])}

        # the in-process loop runs first and again last: the machine's speed can drift during the run, and the
        # targets compare against the faster of the two (report.targets)
        inproc, footprint = measure_inprocess(plan, work, env, report.INPROCESS_FIRST)
        rows += inproc

        flask_cells = [("/predict", "/predict", work.body("rest", n), CONCURRENCIES) for n in ROW_COUNTS]
        got, memory["flask+gunicorn"] = measure_server(
            plan, servers.flask_gunicorn(work.model_path), flask_cells, want, env, log_dir
        )
        rows += got

        # the HTTP floor (issue 16): a bare ASGI app running the in-process loop's request once per request; its
        # one-connection cells, and modelapi's, are measured in alternating rounds below (bench/paired.py)
        floor_cells = [("/predict", "/predict", work.body("rest", n), MANY) for n in ROW_COUNTS]
        got, _ = measure_server(plan, servers.floor(work.model_path), floor_cells, want, env, log_dir)
        rows += got

        spec = servers.modelapi("modelapi", [work.model_path])
        cells = modelapi_cells(work, "logreg", list(ROUTES), ROW_COUNTS, MANY)
        got, memory["modelapi"] = measure_server(plan, spec, cells, want, env, log_dir)
        rows += got

        rows += measure_grpc(plan, work.model_path, want, env, log_dir, Path(tmp), work.rows)
        # as production runs it: an API key on every request, metrics on (issue 16: within 10 % of the default)
        spec = servers.modelapi_production(report.PRODUCTION, [work.model_path], Path(tmp) / "state")
        cells = modelapi_cells(work, "logreg", list(ROUTES), ROW_COUNTS, (64,))
        got, _ = measure_server(plan, spec, cells, want, env, log_dir)
        rows += got

        rounds = measure_one_connection(plan, work, want, env, log_dir, Path(tmp) / "state-paired")
        rows += paired.medians(rounds)

        # metrics off beside the default (on), in the same run: what observing costs (docs/observability.md)
        spec = servers.modelapi(METRICS_OFF, [work.model_path], "--no-metrics")
        cells = modelapi_cells(work, "logreg", ["friendly JSON"], (1,), (64,))
        got, _ = measure_server(plan, spec, cells, want, env, log_dir)
        rows += got

        # the prediction log at 100 % beside the default (off), in the same run: what logging costs
        # (docs/monitoring.md); its files go to a state directory of this run's own
        if features.log_predictions:
            log_state = ("--state-dir", str(Path(tmp) / "log-state"))
            spec = servers.modelapi(LOG_ALL, [work.model_path], "--log-predictions", "1.0", *log_state)
            cells = modelapi_cells(work, "logreg", ["friendly JSON"], (1,), (64,))
            got, _ = measure_server(plan, spec, cells, want, env, log_dir)
            rows += got

        if features.workers:
            name = f"modelapi --workers {plan.workers}"
            spec = servers.modelapi(name, [work.model_path], "--workers", str(plan.workers))
            cells = modelapi_cells(work, "logreg", ["friendly JSON"], (1,), (1, 64))
            got, memory[name] = measure_server(plan, spec, cells, want, env, log_dir)
            rows += got

        forest_modes: list[tuple[str, tuple[str, ...], dict[str, str]]] = [("on", (), {})]
        if features.batching_off is not None:
            forest_modes.append(("off", *features.batching_off))
        for mode, extra, extra_env in forest_modes:
            name = f"modelapi forest, batching {mode}"
            pin = ("--sha256", work.forest_sha256)
            spec = servers.modelapi(name, [work.forest_path], *pin, *extra, env=extra_env)
            cells = modelapi_cells(work, "forest", ["friendly JSON"], (1,), (1, 64))
            got, _ = measure_server(plan, spec, cells, forest_want, env, log_dir)
            rows += got

        inproc, footprint_last = measure_inprocess(plan, work, env, report.INPROCESS_LAST)
        rows += inproc
        footprint = max(footprint, footprint_last)
        meta["model footprint (in-process loop RSS)"] = f"{footprint / report.MIB:.1f} MiB"

    worker_rss = {k: [m.rss for m in v if m.role == "worker"] for k, v in memory.items() if k.startswith("modelapi")}
    checks = report.targets(rows, worker_rss, footprint, rounds)
    meta["memory after the load"] = {k: [m.text() for m in v] for k, v in memory.items()}
    meta["load average after"] = f"{os.getloadavg()[0]:.2f}"
    print()
    print(report.table(rows))
    print()
    for line in [c.line() for c in checks] + report.warnings(rows):
        print(line)
    if features.batching_off is None:
        print("NOT MEASURED  batching on vs off: this modelapi has no --no-batching flag nor a batching setting")
    paths = report.write(RESULTS, stamp, meta, rows, checks)
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    # the overload cell last (docs/overload.md): 64, 640 and 1,920 connections, its own table and file
    plan.log("overload cell")
    return overload.main(["--seconds", str(plan.seconds), "--rounds", str(plan.overload_rounds)])


def _commit() -> str:
    """The checkout's commit, with ``+changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_repo(), capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_repo(), capture_output=True, text=True
        )
    except OSError:
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per cell and no warm-up: checks the harness")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per cell (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the multi-worker cells (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=5,
        help="alternating rounds of 2 s for the one-connection cells of the floor and modelapi (default 5)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 1:  # no round: every one-connection target, and the --workers p50 target, would go missing
        parser.error(f"--rounds {args.rounds}: expected 1 or more rounds of the one-connection cells")
    seconds = 1 if args.quick else args.seconds
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    plan = Plan(
        seconds=seconds, warmup=0 if args.quick else 2, workers=args.workers, log=log,
        rounds=2 if args.quick else args.rounds, round_seconds=1 if args.quick else 2,
        overload_rounds=1 if args.quick else 3,
    )  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    command = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    # SIGTERM unwinds like Ctrl+C, so every server started so far is stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(plan, stamp, command)
    except (LoadError, servers.ServerError, verify.WrongAnswer, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"bench: error: {exc}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
