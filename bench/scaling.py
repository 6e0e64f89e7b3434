"""Scaling on a many-core machine: ``modelapi serve --workers N``, and batching on a GPU.

Part A: the issue's LogisticRegression served by ``--workers N`` (1, 2, 4, 8) pinned to the server cores (by
default the first 8 this process may use), wrk with 8 threads on the next 8 (closed loop, keep-alive, 256
connections), 1-row and 32-row friendly JSON. Each server's answers are checked before it is timed. The
in-process 1-row loop on one server core is the reference for one core.

Part B, where torch sees CUDA (issue 16, item 4): a ResNet-18-style CNN served with ``--device cuda``, one
3x64x64 image per request over V2 binary at 64 connections, adaptive batching on against ``--no-batching``, with
the verdict on the target (batching on at least 20x the req/s of batching off; ``gpu_batching.py``, about 1.5
minutes). ``--torch-device cpu`` runs part B on the CPU instead, as a check of the harness (not of the target).

Prints one Markdown table per part and writes them, with the raw numbers and the server logs, to ``--out``.

    python -m bench.scaling --out DIR       # 10 s per cell, about 4 minutes on 16 cores
    python -m bench.scaling --seconds 1 --workers 1,2 --server-cores 0 --load-cores 1 --threads 1 --connections 16
    python -m bench.scaling --seconds 1 --warmup 0 --workers 1 --server-cores 0 --load-cores 1 --threads 1 \
        --connections 8 --cuda-connections 8 --torch-device cpu   # both parts, on 2 cores without a GPU
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
import traceback
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from . import environment, servers, verify, workload
from .cells import ROW_COUNTS, CellError, Outcome, Plan, describe, measure, result
from .gpu_batching import gpu_batching, table_b
from .loadgen import LoadError, require

RESULTS = Path(__file__).with_name("results")
LOGREG_PATH = "/models/logreg/predict"


def parse_cores(spec: str) -> list[int]:
    """A ``taskset -c`` list such as ``0-7`` or ``0,2,4-6`` as sorted core numbers."""
    cores: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    if not cores:
        raise ValueError(f"no cores in {spec!r}")
    return sorted(cores)


def core_list(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def default_cores() -> tuple[str, str]:
    """Up to 8 server cores and as many load cores, from the cores this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise LoadError("the bench needs 2 cores: the server's and wrk's")
    half = min(8, len(allowed) // 2)
    return core_list(allowed[:half]), core_list(allowed[half : 2 * half])


def smt_overlap(server: list[int], load: list[int]) -> list[int]:
    """Load cores that are hyper-thread siblings of a server core (they share one physical core)."""
    shared: set[int] = set()
    for core in server:
        path = Path(f"/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list")
        try:
            shared.update(parse_cores(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    return sorted(shared & set(load))


# Part A: worker scaling


def inprocess(plan: Plan, work: workload.Workload, env: dict[str, str]) -> dict[str, float]:
    """The 1-row JSON + predict loop, no HTTP, on the first server core."""
    core = parse_cores(plan.server_cores)[0]
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "bench.inprocess"]
    cmd += [str(work.model_path), str(work.body("rest", 1).path), str(plan.seconds)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=_repo(), timeout=300)
    r = orjson.loads(proc.stdout)
    rps = r["requests"] / r["seconds"]
    plan.log(f"in-process 1-row loop on core {core}: {rps:,.0f} req/s")
    return {"core": core, "rps": rps, "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3}


def worker_scaling(
    plan: Plan, outcome: Outcome, work: workload.Workload, env: dict[str, str], log_dir: Path, tmp: Path
) -> None:
    want = {n: workload.expected(work.model_path, work.rows[:n]) for n in ROW_COUNTS}
    bodies = [work.body("rest", n) for n in ROW_COUNTS]
    try:
        outcome.inprocess = inprocess(plan, work, env)
    except CellError as exc:
        outcome.fail(f"in-process loop: {describe(exc)}")
    for w in plan.workers:
        spec = servers.modelapi(f"modelapi --workers {w}", [work.model_path], "--workers", str(w))
        try:
            with servers.serve(
                spec, core=plan.server_cores, env=env, log_dir=log_dir, timeout=plan.ready_timeout
            ) as srv:
                for body in bodies:
                    verify.check(spec.name, LOGREG_PATH, srv.host, srv.port, body, want[body.rows])
                processes = len(srv.workers())
                if processes != w:
                    raise servers.ServerError(f"{spec.name}: {processes} serving processes, expected {w}")
                plan.log(f"{spec.name}: {processes} worker(s), answers verified")
                for body in bodies:
                    cell, cpu_us = measure(plan, srv, LOGREG_PATH, body, plan.connections)
                    outcome.results.append(result("A", str(w), body, plan.connections, cell, cpu_us, processes))
                    plan.log(
                        f"{spec.name} {body.rows}-row c{plan.connections}: {cell.rps:,.0f} req/s, "
                        f"p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, {cell.errors} errors"
                    )
        except CellError as exc:
            outcome.fail(f"{spec.name}: {describe(exc)}")
            plan.log(f"{spec.name}: FAILED: {describe(exc)}")


def table_a(outcome: Outcome) -> str:
    rows = [r for r in outcome.results if r.part == "A"]
    lines = [
        "| workers | body | req/s | rows/s | p50 ms | p99 ms | errors | speed-up vs 1 worker | server CPU µs/req |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        one = next((b for b in rows if b.label == "1" and b.rows == r.rows), None)
        speedup = f"{r.rows_per_s / one.rows_per_s:.2f}x" if one and one.rows_per_s else "n/a"
        cpu = f"{r.cpu_us_per_req:,.0f}" if r.cpu_us_per_req is not None else "n/a"
        lines.append(
            f"| {r.label} | {r.rows}-row JSON | {r.rps:,.0f} | {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.errors} | {speedup} | {cpu} |"
        )
    ref = outcome.inprocess
    if ref is not None:
        lines.append(
            f"\nReference: the in-process 1-row loop (JSON decode, predict, JSON encode; no HTTP) on core "
            f"{ref['core']:.0f}: {ref['rps']:,.0f} req/s, p50 {ref['p50_ms'] * 1e3:.0f} µs, "
            f"p99 {ref['p99_ms'] * 1e3:.0f} µs."
        )
    return "\n".join(lines)


# The run


def describe_machine(plan: Plan, env: dict[str, str]) -> dict[str, Any]:
    server, load = parse_cores(plan.server_cores), parse_cores(plan.load_cores)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, this process may use {len(os.sched_getaffinity(0))}",
        "server cores": plan.server_cores,
        "wrk": f"cores {plan.load_cores}, {plan.threads} threads, closed loop, keep-alive",
        "seconds per cell": f"{plan.seconds} (after a {plan.warmup} s warm-up)",
        "load average before": f"{os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
        "thread env": {k: env[k] for k in environment.THREAD_VARS},
    }
    shared = smt_overlap(server, load)
    if shared:
        meta["WARNING"] = f"wrk cores {core_list(shared)} are hyper-thread siblings of server cores"
    try:
        meta["blas"] = environment.blas_info(env)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        meta["blas"] = f"unknown ({describe(exc)})"
    return meta


def render(outcome: Outcome, command: str) -> str:
    meta = "\n".join(f"- {k}: {v}" for k, v in outcome.meta.items())
    text = f"# modelapi scaling\n\n`{command}`\n\n{meta}\n\n"
    text += f"## A. Worker scaling (LogisticRegression, CPU)\n\n{table_a(outcome)}\n\n"
    text += f"## B. Adaptive batching on a GPU (ResNet-18-style CNN, one image per request)\n\n{table_b(outcome)}\n"
    if outcome.failures:
        text += "\n## Failures\n\n" + "\n".join(f"- {f}" for f in outcome.failures) + "\n"
    return text


def write(out: Path, stamp: str, outcome: Outcome, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"scaling-{stamp}.md", out / f"scaling-{stamp}.json"
    md.write_text(render(outcome, command), encoding="utf-8")
    raw = {
        "command": command,
        "meta": outcome.meta,
        "results": [asdict(r) for r in outcome.results],
        "inprocess": outcome.inprocess,
        "failures": outcome.failures or [],
        "cuda_note": outcome.cuda_note,
        "target": outcome.target,
    }
    js.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    return [md, js]


def run(plan: Plan, stamp: str, command: str) -> int:
    require("wrk", "install it with: apt-get install -y wrk")
    require("taskset", "install it with: apt-get install -y util-linux")
    os.sched_setaffinity(0, parse_cores(plan.load_cores))  # the harness stays off the server's cores
    env = environment.bench_env()
    outcome = Outcome(describe_machine(plan, env), [])
    log_dir = plan.out / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelapi-scaling-") as tmp:
        work = workload.build(Path(tmp), ROW_COUNTS)
        plan.log("models trained, bodies written")
        for part, fn in (("A", worker_scaling), ("B", gpu_batching)):
            try:
                fn(plan, outcome, work, env, log_dir, Path(tmp))
            except Exception as exc:  # one part's failure must not lose the other's results
                traceback.print_exc()
                outcome.fail(f"part {part}: {describe(exc)}")
            write(plan.out, stamp, outcome, command)  # part A's numbers survive whatever part B does
    outcome.meta["load average after"] = f"{os.getloadavg()[0]:.2f}"
    paths = write(plan.out, stamp, outcome, command)
    print("\n" + render(outcome, command))
    print(f"written: {', '.join(map(str, paths))}; server logs in {log_dir}")
    return 1 if outcome.failures else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="seconds per timed cell (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each timed cell (default 2)")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts for part A (default 1,2,4,8)")
    parser.add_argument("--server-cores", help="taskset -c list for the servers (default: the first 8 usable)")
    parser.add_argument("--load-cores", help="taskset -c list for wrk (default: the next 8 usable)")
    parser.add_argument("--threads", type=int, help="wrk threads (default: one per load core)")
    parser.add_argument("--connections", type=int, default=256, help="wrk connections in part A (default 256)")
    parser.add_argument("--cuda-connections", type=int, default=64, help="wrk connections in part B (default 64)")
    parser.add_argument(
        "--torch-device",
        default="cuda",
        help="device for part B (default cuda; skipped when CUDA is absent; cpu: a check of the harness)",
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds a server may take to start")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"directory for the results (default {RESULTS})")
    args = parser.parse_args(argv)
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        auto_server, auto_load = default_cores()
        server_cores = args.server_cores or auto_server
        load_cores = args.load_cores or auto_load
        plan = Plan(
            seconds=args.seconds,
            warmup=args.warmup,
            workers=tuple(int(w) for w in args.workers.split(",")),
            server_cores=core_list(parse_cores(server_cores)),
            load_cores=core_list(parse_cores(load_cores)),
            threads=args.threads or len(parse_cores(load_cores)),
            connections=args.connections,
            cuda_connections=args.cuda_connections,
            torch_device=args.torch_device,
            ready_timeout=args.ready_timeout,
            out=args.out,
            log=log,
        )
    except (ValueError, LoadError) as exc:
        parser.error(str(exc))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    command = shlex.join(["python", "-m", "bench.scaling", *(argv if argv is not None else sys.argv[1:])])
    # SIGTERM unwinds like Ctrl+C, so every server started so far is stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(plan, stamp, command)
    except LoadError as exc:
        print(f"scaling: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
