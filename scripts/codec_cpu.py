"""CPU time per request of the modelapi ASGI app under concurrent 32-row requests, in process (no sockets).

    .venv/bin/python scripts/codec_cpu.py [rest|v2-json|v2-binary] [--rows 32] [--concurrency 64]
        [--gc-threshold N] [--gc-report]

The batched case of issue 16 without the network: the bench's LogisticRegression and its body of ``--rows`` rows
(``bench/workload.py``), served by ``create_app`` at the default log level (the access line to /dev/null),
``--concurrency`` callers each sending its next request as soon as its answer is in, so that the batcher
gathers their rows as it does under wrk. The heap is settled as ``modelapi serve`` settles it
(``server.settle_heap``: collected, then frozen) after the warm-up. Prints the best of 10 runs of 1,280
requests in process CPU time (the model's thread included), and the same for the minimal request
(``bench/minimal.py``, one request at a time) on the same model: run it under ``taskset -c 0``.

``--gc-threshold N``: the cyclic collector's first threshold (700 by default) for the measured runs.
``--gc-report``: the collector's passes and their CPU per request in the last run, by generation.
Best of many short runs, because on a shared machine the minimum is the run least disturbed by others.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import asgi_app  # scripts/, beside this file
from bench import minimal, workload

from modelapi import logs
from modelapi.heap import freeze
from modelapi.http.app import create_app
from modelapi.settings import Settings

PATHS = {"rest": "/models/logreg/predict", "v2-json": "/v2/models/logreg/infer", "v2-binary": "/v2/models/logreg/infer"}
RUNS, PER_RUN = 10, 1280


class GcClock:
    """The collector's passes and their CPU time (this thread's), by generation."""

    def __init__(self) -> None:
        self.passes: Counter[int] = Counter()
        self.seconds: dict[int, float] = {}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.passes[info["generation"]] += 1
            generation = info["generation"]
            self.seconds[generation] = self.seconds.get(generation, 0.0) + time.thread_time() - self._started


async def main(kind: str, rows: int, concurrency: int, threshold: int | None, report: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="codec-cpu-"))
    work = workload.build(tmp, (rows,))
    body = work.body(kind, rows)
    data = body.data()
    headers = [(k.lower().encode(), v.encode()) for k, v in body.headers().items()]
    headers += [(b"host", b"127.0.0.1"), (b"content-length", str(len(data)).encode())]
    settings = Settings(models=[str(work.model_path)], log_level="info")
    logs.configure(settings, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    app = create_app(None, settings)

    lifespan = await asgi_app.start(app)
    one = asgi_app.poster(app, PATHS[kind], headers, data)

    async def caller(n: int) -> None:
        for _ in range(n):
            await one()

    async def load(total: int) -> None:
        await asyncio.gather(*(caller(total // concurrency) for _ in range(concurrency)))

    await load(concurrency * 10)  # warm up: the batcher measures the model, caches fill
    freeze()
    if threshold is not None:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])
    best = float("inf")
    clock = GcClock()
    for run in range(RUNS):
        if report and run == RUNS - 1:
            gc.callbacks.append(clock)
        started = time.process_time()
        await load(PER_RUN)
        best = min(best, (time.process_time() - started) / PER_RUN * 1e6)
    if report:
        gc.callbacks.remove(clock)
        for gen in sorted(clock.passes):
            us = clock.seconds[gen] / PER_RUN * 1e6
            print(f"  gc generation {gen}: {clock.passes[gen]} passes, {us:.1f} µs CPU per request")
    lifespan.cancel()
    est = minimal.load(work.model_path)
    keys = minimal.class_keys(est)
    rest = work.body("rest", rows).data()
    floor = float("inf")
    for _ in range(RUNS):
        started = time.process_time()
        for _ in range(200):
            minimal.handle(est, keys, rest)
        floor = min(floor, (time.process_time() - started) / 200 * 1e6)
    print(
        f"{kind} {rows} rows x {concurrency} callers: app {best:.0f} µs/request, minimal request {floor:.0f} µs "
        f"({floor / best:.2f}x the app's rows/s per CPU second)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="v2-json", choices=sorted(PATHS))
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--gc-threshold", type=int)
    parser.add_argument("--gc-report", action="store_true")
    args = parser.parse_args()
    uvloop.run(main(args.kind, args.rows, args.concurrency, args.gc_threshold, args.gc_report))
