"""The in-process limit: decode the JSON body, call the model, encode the answer, in a loop. No HTTP.

Run as ``python -m bench.inprocess MODEL BODY SECONDS`` (pinned to the server's core by the harness); prints
one JSON object: requests, seconds, latency percentiles, and this process's resident memory, which the harness
takes as the model's own footprint (Python, numpy, scikit-learn, skops and the loaded model). The model is loaded
the way modelapi loads it (``load_model``), so the footprint holds the same libraries as a server worker's and
no more (skops alone would import all of PyTorch where it is installed).

The answer has the same content as the friendly route's (label and class probabilities per row), so the
loop does the model work a server must do, and nothing else.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .procfs import core_busy_seconds, rss_bytes


def handle(est: Any, keys: list[str], body: bytes) -> bytes:
    data = orjson.loads(body)
    records = data if isinstance(data, list) else [data]
    X = np.array([r["input"] for r in records], dtype=np.float64)
    labels = est.predict(X).tolist()
    proba = est.predict_proba(X).tolist()
    out = [
        {"prediction": lab, "probabilities": dict(zip(keys, p, strict=True))}
        for lab, p in zip(labels, proba, strict=True)
    ]
    return orjson.dumps(out[0] if isinstance(data, dict) else {"predictions": out})


def loop(est: Any, body: bytes, seconds: float) -> list[int]:
    """Latency of each iteration, in nanoseconds, for ``seconds`` of wall time."""
    keys = [str(c) for c in est.classes_]
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


def _estimator(model_path: Path) -> Any:
    from modelapi.models.registry import load_model

    model = load_model(model_path)
    model.load()
    return model.estimator  # type: ignore[attr-defined]  # a scikit-learn model


def main(argv: list[str]) -> int:
    model_path, body_path, seconds = Path(argv[0]), Path(argv[1]), float(argv[2])
    est = _estimator(model_path)
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
