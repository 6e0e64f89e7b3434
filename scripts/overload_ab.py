"""The overload cell's 64- and 1,920-connection cells for one or more server trees side by side: successful
requests a second, the server's CPU per successful request and the refusals a second, cells alternating between
the trees so that the core's slow and fast spells fall on all of them.

    PYTHONPATH=$PWD .venv/bin/python scripts/overload_ab.py [--rounds 3] [--retry-at-once] TREE [TREE ...]

Each TREE is a checkout whose ``src`` the server imports (``PYTHONPATH=TREE/src``); each server (``modelapi serve``
on the bench's logistic regression, ``--max-queue-ms 20 --keep-alive 60``, its operations port on) runs on core 0
as ``bench/overload.py`` runs it, and wrk on core 1 with 32-row V2 JSON bodies, clients that wait ``Retry-After``
unless ``--retry-at-once``. CPU per successful request counts every answer's CPU (refusals included) against the
successful requests the server counted (``modelapi_requests_total{code="2xx"}``), so it is what a refusal, a held
retry or a dearer request costs the goodput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import overload, servers, workload

SERVED = re.compile(r'^modelapi_requests_total{[^}]*code="2xx"[^}]*} (\S+)$', re.M)


def served(ops: str) -> float:
    return sum(float(m.group(1)) for m in SERVED.finditer(httpx.get(ops + "/metrics", timeout=5).text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--retry-at-once", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overload-ab-") as tmp, contextlib.ExitStack() as stack:
        work = workload.build(Path(tmp), (overload.ROWS,))
        body = work.body("v2-json", overload.ROWS)
        runs = []
        for i, tree in enumerate(args.trees):
            ops_port = servers.free_port()
            extra = ("--max-queue-ms", "20", "--metrics-port", str(ops_port), "--keep-alive", "60")
            spec = servers.modelapi(f"tree{i}", [work.model_path], *extra)
            env = dict(os.environ, PYTHONPATH=str(tree.resolve() / "src"))
            srv = stack.enter_context(servers.serve(spec, core=overload.SERVER_CORE, env=env, log_dir=Path(tmp)))
            overload.cell(srv, body, 64, 2, False)  # warm-up
            runs.append((tree, srv, f"http://127.0.0.1:{ops_port}"))
        for _ in range(args.rounds):
            for tree, srv, ops in runs:
                ok: list[float] = []
                cells = []
                for connections in (64, 1920):
                    time.sleep(3)
                    before = served(ops)
                    got = overload.cell(srv, body, connections, args.seconds, not args.retry_at_once)
                    n = served(ops) - before
                    ok.append(got.ok_rps)
                    refused = got.statuses.get(503, 0) / got.seconds
                    per_ok = got.cpu_s / max(n, 1) * 1e6
                    cells.append(f"{connections}: {got.ok_rps:5,.0f} OK/s {per_ok:4.0f} us/OK {refused:4,.0f} 503/s")
                ratio = ok[1] / ok[0]
                print(f"{tree.resolve().name:10s} " + " | ".join(cells) + f" | 1920 vs 64: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
