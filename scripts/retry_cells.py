"""Clients that retry at once, cell after cell on one server: successful requests a second and the server's CPU
as a share of its core in each, to see the core go idle while requests are held (``http/holds.py``).

    PYTHONPATH=$PWD/src .venv/bin/python scripts/retry_cells.py 64,640,640,640 [--seconds 6]

The server (``modelapi serve`` on the bench's logistic regression, ``--max-queue-ms 20``, as ``bench/overload.py``
runs it) on core 0; wrk (``bench/overload.lua``, no ``honour``: a new request the moment an answer arrives) on
core 1 with 32-row V2 JSON bodies, after a 2 s warm-up at 64 connections. Unlike the overload cell of ``make
bench``, cells of the same size follow one another on new connections (the kernel reuses the clients' ports), and
no probe runs beside them. A share under 100 % is time the server had nothing to do with requests waiting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import procfs, servers, workload
from bench.loadgen import MARK
from bench.overload import LOAD_CORE, ROWS, SCRIPT, SERVER_CORE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("connections", help="the cells' connection counts, in order, e.g. 64,640,640")
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix="retry-cells-") as tmp:
        work = workload.build(Path(tmp), (ROWS,))
        body = work.body("v2-json", ROWS)
        spec = servers.modelapi("modelapi", [work.model_path], "--max-queue-ms", "20")
        with servers.serve(spec, core=SERVER_CORE, env=dict(os.environ), log_dir=Path(tmp)) as srv:
            url = srv.url + "/v2/models/logreg/infer"

            def wrk(connections: int, seconds: int) -> dict[str, object]:
                argv = [
                    "taskset", "-c", str(LOAD_CORE), "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                    "--timeout", "10s", "-s", str(SCRIPT), url, "--", str(body.path), body.content_type, "",
                ]  # fmt: skip
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                line = next(ln for ln in out.splitlines() if ln.startswith(MARK))
                return orjson.loads(line[len(MARK) :])  # type: ignore[no-any-return]

            wrk(64, 2)
            for connections in (int(c) for c in args.connections.split(",")):
                pids = procfs.tree(srv.process.pid)
                cpu = procfs.cpu_seconds(pids)
                got = wrk(connections, args.seconds)
                cpu = procfs.cpu_seconds(pids) - cpu
                seconds = float(got["duration_us"]) / 1e6  # type: ignore[arg-type]
                statuses: dict[str, int] = got["statuses"]  # type: ignore[assignment]
                print(
                    f"{connections} connections: {statuses.get('200', 0) / seconds:,.0f} OK/s, "
                    f"{statuses.get('503', 0) / seconds:,.0f} 503/s, server CPU {cpu / seconds:.0%} of its core",
                    flush=True,
                )


if __name__ == "__main__":
    main()
