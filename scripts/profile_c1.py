"""Where a request's time goes at one connection, the HTTP floor beside modelapi: py-spy samples of each real server
under wrk, sorted into parts by the innermost frame's module, as microseconds of wall-clock time a request.

    .venv/bin/python scripts/profile_c1.py [--seconds 8] [--route rest|v2-json] [CONTENDER ...]

Contenders as ``bench.ab`` names them (default: ``floor default``). Each server runs as the bench runs it (core 0,
wrk on core 1, the bench's 1-row body), sampled by ``py-spy record --idle --nonblocking`` for ``--seconds`` of a
longer wrk cell. Needs py-spy (``pip install py-spy``; root or ptrace rights). A sample is one stack of the event
loop's thread; a stack with a frame of scikit-learn (or the libraries its checks call) is the model's, any other
goes to the part of the innermost frame's module (the rules in ``PARTS``). Only the event loop's thread is
sampled: a batch run on the model's thread (a model over the inline budget, ``batching.INLINE_BUDGET_S``) shows as
the loop waiting, not as the model. The event loop waiting for the client
(and in its own C code) is what is left when no Python frame runs above ``asyncio.run``. Non-blocking sampling
reads stacks while they change, so a few stacks are cut short or mixed: the parts are good to a few percent.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import ab, servers, workload
from bench.loadgen import run_wrk

#: (part, pattern on the innermost frame's file), first match wins; frames are "function (path:line)"
PARTS = (
    ("access line (logging)", r"modelapi/http/access\.py|modelapi/logs\.py|\(logging/"),
    ("codec: body decoded, answer encoded", r"modelapi/(protocols/|jsonutil\.py|security/json_limits\.py)"),
    ("codec: body decoded, answer encoded", r"bench/minimal\.py"),
    ("data plane: admission, signature, batcher", r"modelapi/(dataplane|signature|batching|gate|context)\.py"),
    ("data plane: admission, signature, batcher", r"modelapi/(models|repository)/"),
    ("ASGI layers: middleware, routing, response", r"modelapi/http/|\(starlette/|bench/floor\.py|uvicorn/middleware/"),
    ("HTTP protocol (uvicorn's, modelapi's)", r"uvicorn/protocols/|modelapi/security/slow_clients\.py"),
    ("metrics, events", r"modelapi/metrics/|modelapi/events\.py|\(prometheus_client/"),
    ("asyncio", r"\(asyncio/"),
)
#: scikit-learn and what its checks call (array API helpers, narwhals, inspect): a stack with one of these is the
#: model's; numpy alone is not (the codecs use it too)
MODEL = re.compile(r"\((sklearn|narwhals|scipy)/|\(inspect\.py")
IDLE = "event loop: waiting, its own C code"


def part(frames: list[str]) -> str:
    if any(MODEL.search(f) for f in frames):
        return "model (scikit-learn, numpy)"
    inner = frames[-1] if frames else ""
    if inner.startswith("Runner.run ") or inner.startswith("run_until_complete "):
        return IDLE
    for name, pattern in PARTS:
        if re.search(pattern, inner):
            return name
    return "other: " + inner.split(" (")[0]


def sample(
    name: str, seconds: int, route: str, tmp: Path, work: workload.Workload
) -> tuple[collections.Counter[str], float]:
    spec = ab.spec_for(name, work.model_path, tmp)
    path = "/predict" if name == "floor" else ab.PATHS[route]
    body = work.body("rest" if name == "floor" else route, 1)
    out = tmp / f"spy-{re.sub(r'[^A-Za-z0-9]', '_', name)}.txt"
    with servers.serve(spec, core=ab.SERVER_CORE, env=dict(os.environ), log_dir=tmp) as srv:
        url = srv.url + path
        run_wrk(url, body, connections=1, seconds=2, core=ab.LOAD_CORE, headers=spec.client_headers)
        cells: list[object] = []
        load = threading.Thread(
            target=lambda: cells.append(
                run_wrk(url, body, connections=1, seconds=seconds + 2, core=ab.LOAD_CORE, headers=spec.client_headers)
            )
        )
        load.start()
        try:
            time.sleep(1)
            spy = shutil.which("py-spy") or str(servers.VENV_BIN / "py-spy")
            subprocess.run(
                [spy, "record", "-p", str(srv.process.pid), "-d", str(seconds), "-r", "1000", "-t", "-f", "raw",
                 "-o", str(out), "--idle", "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
        finally:
            load.join()
    if not cells:
        raise SystemExit(f"{name}: the load did not finish (wrk failed): see the server's log in {tmp}")
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        counts[part(frames[1:])] += int(n)
    rps = cells[0].rps  # type: ignore[attr-defined]
    return counts, rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("contenders", nargs="*", default=["floor", "default"])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--route", choices=["rest", "v2-json", "v2-binary"], default="rest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelapi-profile-") as tmp_name:
        tmp = Path(tmp_name)
        work = workload.build(tmp, (1,))
        for name in args.contenders:
            counts, rps = sample(name, args.seconds, args.route, tmp, work)
            total = sum(counts.values())
            if rps <= 0 or not total:
                print(f"\n{name}: no request served or no sample taken")
                continue
            wall_us = 1e6 / rps
            print(f"\n{name}: {rps:,.0f} req/s, {wall_us:.0f} us a request (wall clock), {total} samples")
            for key, n in counts.most_common():
                if n / total >= 0.005:
                    print(f"  {n / total * 100:5.1f} %  {n / total * wall_us:6.0f} us  {key}")


if __name__ == "__main__":
    main()
