"""CPU time per request of the modelapi ASGI app driven in process (no sockets), against the minimal request.

    .venv/bin/python scripts/app_cpu.py [rest|v2-json] [--auth] [--profile FILE]

Builds the bench's LogisticRegression and 1-row bodies (``bench/workload.py``), serves them with ``create_app`` at
the default log level (the access line goes to /dev/null) and sends one request at a time, awaiting each answer:
concurrency 1 without the network. Prints the best of 30 runs of 200 requests in process CPU time, and the
same for the minimal request (``bench/minimal.py``) on the same model: their difference is what modelapi's own
code costs per request. ``--auth``: a key required and sent (the production configuration, rate limit raised
out of the way). ``--profile FILE``: cProfile 3,000 requests into FILE instead (read it with ``pstats``).
Best of many short runs, because on a shared machine the minimum is the run least disturbed by others.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import asgi_app  # scripts/, beside this file
from bench import minimal, workload

from modelapi import logs
from modelapi.http.app import create_app
from modelapi.security.keys import KeyStore
from modelapi.settings import Settings

PATHS = {"rest": "/models/logreg/predict", "v2-json": "/v2/models/logreg/infer"}


def best_us(run: Any, repeats: int = 30, n: int = 200) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        run(n)
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


async def main(kind: str, auth: bool, profile: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="app-cpu-"))
    work = workload.build(tmp, (1,))
    body = work.body(kind, 1)
    data = body.data()
    headers = [(k.lower().encode(), v.encode()) for k, v in body.headers().items()]
    headers += [(b"host", b"127.0.0.1"), (b"content-length", str(len(data)).encode())]
    extra: dict[str, Any] = {}
    if auth:
        store = KeyStore.open(tmp / "state", None)
        key, _ = store.create("app-cpu", frozenset({"predict"}), None, None)
        store.close()
        extra = {"auth": "on", "state_dir": tmp / "state", "rate_limit": 1e6, "rate_burst": 1_000_000}
        headers.append((b"authorization", f"Bearer {key}".encode()))
    settings = Settings(models=[str(work.model_path)], log_level="info", **extra)
    logs.configure(settings, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    app = create_app(None, settings)

    lifespan = await asgi_app.start(app)
    one = asgi_app.poster(app, PATHS[kind], headers, data)

    for _ in range(300):  # warm up: the batcher measures the model, caches fill
        await one()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3000):
            await one()
        prof.disable()
        prof.dump_stats(profile)
        print(f"written: {profile}")
    else:
        best = float("inf")
        for _ in range(30):
            started = time.process_time()
            for _ in range(200):
                await one()
            best = min(best, (time.process_time() - started) / 200 * 1e6)
        est = minimal.load(work.model_path)
        keys = minimal.class_keys(est)
        rest = work.body("rest", 1).data()
        floor = best_us(lambda n: [minimal.handle(est, keys, rest) for _ in range(n)])
        print(f"{kind}{' with a key' if auth else ''}: app {best:.1f} µs/request, minimal request {floor:.1f} µs, "
              f"modelapi's own {best - floor:.1f} µs")  # fmt: skip
    lifespan.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="rest", choices=sorted(PATHS))
    parser.add_argument("--auth", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    uvloop.run(main(args.kind, args.auth, args.profile))
