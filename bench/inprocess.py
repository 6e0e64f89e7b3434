"""The in-process limit: the minimal request (``minimal.handle``: orjson, numpy, predict) in a loop. No HTTP.

Run as ``python -m bench.inprocess MODEL BODY SECONDS`` (pinned to the server's core by the harness); prints
one JSON object: requests, seconds, latency percentiles, and this process's resident memory, which the harness
takes as the model's own footprint (Python, numpy, scikit-learn, skops and the loaded model). No modelapi code
runs, not even to load the model: skops loads it directly, with PyTorch kept out as modelapi keeps it out
(``minimal.load``), so the footprint holds the same libraries as a server worker's and no more.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .minimal import class_keys, handle, load
from .procfs import core_busy_seconds, rss_bytes


def loop(est: Any, body: bytes, seconds: float) -> list[int]:
    """Latency of each iteration, in nanoseconds, for ``seconds`` of wall time."""
    keys = class_keys(est)
    for _ in range(50):  # warm up
        handle(est, keys, body)
    latencies: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    now = clock()
    while now < end:
        handle(est, keys, body)
        after = clock()
        latencies.append(after - now)
        now = after
    return latencies


def main(argv: list[str]) -> int:
    model_path, body_path, seconds = Path(argv[0]), Path(argv[1]), float(argv[2])
    est = load(model_path)
    core = min(os.sched_getaffinity(0))  # the harness pins this process to one core
    cpu, busy = time.process_time(), core_busy_seconds(core)
    latencies = np.asarray(loop(est, body_path.read_bytes(), seconds), dtype=np.float64)
    # both include the 50 warm-up iterations: a negligible overestimate
    cpu, busy = time.process_time() - cpu, core_busy_seconds(core) - busy
    result = {
        "requests": len(latencies),
        "seconds": float(latencies.sum() / 1e9),
        "cpu_seconds": cpu,
        "other_load_pct": float(max(0.0, busy - cpu) / (latencies.sum() / 1e9) * 100),
        "p50_us": float(np.percentile(latencies, 50) / 1e3),
        "p99_us": float(np.percentile(latencies, 99) / 1e3),
        "rss_bytes": rss_bytes(0),
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
