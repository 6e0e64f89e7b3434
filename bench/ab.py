"""Alternating A/B of server configurations on one cell: the quick check behind a change to the request path.

Each contender is served in turn on core 0 with wrk on core 1, for ``--rounds`` rounds (A, B, ..., A, B, ...), so
a drift in the machine's speed hits every contender alike. Prints each round's requests/s and CPU per request,
each contender's median as a ratio of the first contender's, and the median of each round's ratio to the first
contender's in that round. ``--together`` starts every contender once (all on core 0, idle but for their turns)
and moves the load between them without restarts: many short rounds, seconds apart, for a small difference on a
machine whose speed swings.

    python -m bench.ab default log                    # --log-predictions 1.0 against the default
    python -m bench.ab default tree:/tmp/before --connections 1 --rounds 20 --seconds 2 --together
    python -m bench.ab floor default --route v2-json --rows 32
    python -m bench.ab default production --connections 1

Contenders: ``floor`` (bench/floor.py), ``default``, ``production`` (an API key, metrics on), ``nometrics``,
``log`` (the prediction log at 100 %), ``modelapi:ARGS`` (``modelapi:--max-batch-size 8``), or ``tree:PATH``: the
default configuration served from the checkout at PATH (its ``src/``), for a before/after in one run::

    mkdir /tmp/before && git archive HEAD~1 | tar -x -C /tmp/before && python -m bench.ab floor tree:/tmp/before default
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import procfs, servers, verify, workload
from .loadgen import run_wrk

SERVER_CORE, LOAD_CORE = 0, 1
PATHS = {"rest": "/models/logreg/predict", "v2-json": "/v2/models/logreg/infer", "v2-binary": "/v2/models/logreg/infer"}


@dataclass
class Sample:
    rps: float
    cpu_us: float
    p50_ms: float
    p99_ms: float
    errors: int


def spec_for(name: str, model: Path, tmp: Path) -> servers.ServerSpec:
    if name == "floor":
        return servers.floor(model)
    if name == "default":
        return servers.modelapi(name, [model])
    if name == "production":
        return servers.modelapi_production(name, [model], tmp / "state-production")
    if name == "nometrics":
        return servers.modelapi(name, [model], "--no-metrics")
    if name == "log":
        return servers.modelapi(name, [model], "--log-predictions", "1.0", "--state-dir", str(tmp / "state-log"))
    if name.startswith("tree:"):  # the default configuration, served from another checkout's src/
        spec = servers.modelapi(name, [model])
        src = Path(name.partition(":")[2]).resolve() / "src"
        return dataclasses.replace(spec, argv=("env", f"PYTHONPATH={src}", *spec.argv))
    if name.startswith("modelapi:"):
        return servers.modelapi(name, [model], *shlex.split(name.partition(":")[2]))
    raise SystemExit(f"unknown contender {name!r}; see python -m bench.ab --help")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "contenders", nargs="+", help="floor, default, production, nometrics, log, modelapi:ARGS, tree:PATH"
    )
    parser.add_argument("--route", choices=list(PATHS), default="rest", help="body kind (default rest: friendly)")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--together", action="store_true",
        help="start every contender once and alternate the load between them (short rounds, no restarts)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if len(set(args.contenders)) != len(args.contenders):
        parser.error("each contender once: a name given twice would share its results")
    results: dict[str, list[Sample]] = {name: [] for name in args.contenders}
    with tempfile.TemporaryDirectory(prefix="modelapi-ab-") as tmp_name:
        tmp = Path(tmp_name)
        work = workload.build(tmp, (args.rows,))
        body = work.body(args.route, args.rows)
        want = workload.expected(work.model_path, work.rows[: args.rows])
        specs = {name: spec_for(name, work.model_path, tmp) for name in args.contenders}

        def target(name: str, srv: servers.Running) -> tuple[str, workload.Body]:
            path = "/predict" if name == "floor" else PATHS[args.route]
            # the floor reads the friendly body only
            body_here = work.body("rest", args.rows) if name == "floor" else body
            verify.check(name, path, srv.host, srv.port, body_here, want, specs[name].client_headers)
            url = srv.url + path
            run_wrk(url, body_here, connections=16, seconds=1, core=LOAD_CORE, headers=specs[name].client_headers)
            return url, body_here

        def measure(round_no: int, name: str, srv: servers.Running, url: str, body_here: workload.Body) -> None:
            pids = procfs.tree(srv.process.pid)
            cpu = procfs.cpu_seconds(pids)
            cell = run_wrk(
                url, body_here, connections=args.connections, seconds=args.seconds, core=LOAD_CORE,
                headers=specs[name].client_headers,
            )  # fmt: skip
            cpu = procfs.cpu_seconds(pids) - cpu
            sample = Sample(cell.rps, cpu / max(cell.requests, 1) * 1e6, cell.p50_ms, cell.p99_ms, cell.errors)
            results[name].append(sample)
            print(
                f"round {round_no + 1} {name:>12}: {sample.rps:9,.0f} req/s  {sample.cpu_us:6.0f} us CPU/req  "
                f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms  errors {sample.errors}",
                flush=True,
            )

        if args.together:  # every server up at once, idle but for its turn: rounds seconds apart, no restarts
            with contextlib.ExitStack() as stack:
                running = {
                    name: stack.enter_context(servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=tmp))
                    for name, spec in specs.items()
                }
                targets = {name: target(name, srv) for name, srv in running.items()}
                for round_no in range(args.rounds):
                    for name, srv in running.items():
                        measure(round_no, name, srv, *targets[name])
        else:
            for round_no in range(args.rounds):
                for name, spec in specs.items():
                    with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=tmp) as srv:
                        measure(round_no, name, srv, *target(name, srv))
    first = args.contenders[0]
    base_rps = statistics.median(s.rps for s in results[first])
    base_cpu = statistics.median(s.cpu_us for s in results[first])
    print(f"\n{args.route} {args.rows}-row c{args.connections}, {args.rounds} rounds of {args.seconds} s; medians:")
    for name, samples in results.items():
        rps = statistics.median(s.rps for s in samples)
        cpu = statistics.median(s.cpu_us for s in samples)
        p50 = statistics.median(s.p50_ms for s in samples)
        print(
            f"  {name:>12}: {rps:9,.0f} req/s ({rps / base_rps:4.2f}x {first})  {cpu:6.0f} us CPU/req "
            f"({cpu / base_cpu:4.2f}x)  p50 {p50:.2f} ms"
        )
    # each round's ratio to the first contender's in the same round: a drift between rounds cancels out
    print(f"\nmedian of each round's ratio to {first}'s:")
    for name, samples in list(results.items())[1:]:
        # a round where the first contender served nothing (or used no CPU) has no ratio
        pairs = [(s, b) for s, b in zip(samples, results[first], strict=True) if b.cpu_us > 0 and b.rps > 0]
        if not pairs:
            print(f"  {name:>12}: no round to compare")
            continue
        cpu_ratio = statistics.median(s.cpu_us / b.cpu_us for s, b in pairs)
        rps_ratio = statistics.median(s.rps / b.rps for s, b in pairs)
        print(f"  {name:>12}: CPU/req {cpu_ratio:4.2f}x  req/s {rps_ratio:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
