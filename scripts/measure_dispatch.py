"""Batching on against off, over sockets: LogisticRegression on 20 features (issue 3's model) served by uvicorn
pinned to CPU 0, driven by wrk pinned to CPU 1 (closed loop, keep-alive), friendly JSON requests of ROWS rows, for
each mode:

    batching   the default: a batch runs on the model's own thread, or inline on the event loop while the model's
               runs stay short (docs/batching.md)
    off        batching off, every request in the shared threadpool

Prints requests/s, p50, p99 and the server's CPU per request for each mode at 1, 16 and 64 connections. Not a test.

    .venv/bin/python scripts/measure_dispatch.py [seconds] [rows] [batching,off]

docs/batching.md's table of 2026-11-27 (the thread against inline on the loop, forced) came from this script as it
was then (``git show bfbcc11:scripts/measure_dispatch.py``), which the data plane has since outgrown.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

FEATURES = [f"f{i}" for i in range(20)]
MODES = ("batching", "off")


class LogReg(Model):
    signature = Signature(
        inputs=tuple(TensorSpec(f, "FP64", (-1,)) for f in FEATURES),
        outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP64", (-1, 3), labels=(0, 1, 2))),
    )

    def __init__(self) -> None:
        self.name = "logreg"

    def load(self) -> None:
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression

        x, y = make_classification(
            n_samples=6024, n_features=20, n_informative=10, n_redundant=4, n_classes=3, random_state=42
        )
        self.estimator = LogisticRegression(max_iter=2000).fit(x, y)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = np.column_stack([inputs[f] for f in FEATURES])
        return {"label": self.estimator.predict(x), "probabilities": self.estimator.predict_proba(x)}


def serve(mode: str, port: int) -> None:
    """``batching``: the default (a batch runs on the model's own thread, or inline on the event loop while the
    model's runs stay short: docs/batching.md); ``off``: every request on the shared threadpool, unbatched."""
    import uvicorn

    from modelapi.http.app import create_app
    from modelapi.settings import Settings

    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    app = create_app([LogReg()], Settings(batching=mode == "batching", log_level="warning"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, body: bytes, conns: int, seconds: int) -> tuple[float, float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("P50 %d\\nP99 %d\\n", latency:percentile(50), latency:percentile(99)))\n'
            "end\n"
        )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "-s",
            f.name,
            f"http://127.0.0.1:{port}/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = int(re.search(r"P50 (\d+)", out).group(1)) / 1000  # type: ignore[union-attr]
    p99 = int(re.search(r"P99 (\d+)", out).group(1)) / 1000  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    return rps, p50, p99


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = np.random.default_rng(0)
    records = [{f: float(v) for f, v in zip(FEATURES, rng.normal(size=20), strict=True)} for _ in range(rows)]
    body = json.dumps(records[0] if rows == 1 else records).encode()
    print(f"{rows}-row requests, {seconds} s per cell; server on CPU 0, wrk on CPU 1")
    print(f"{'mode':<8}{'conc':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server CPU us/req':>19}")
    for mode in sys.argv[3].split(",") if len(sys.argv) > 3 else MODES:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        env.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"))
        code = f"import measure_dispatch as m; m.serve({mode!r}, {port})"
        proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", code], env=env)
        try:
            wait_ready(port)
            wrk(port, body, 8, 1)  # warm-up
            for conns in (1, 16, 64):
                cpu = cpu_seconds(proc.pid)
                rps, p50, p99 = wrk(port, body, conns, seconds)
                per = (cpu_seconds(proc.pid) - cpu) / (rps * seconds) * 1e6
                print(f"{mode:<8}{conns:>6}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{per:>19.0f}", flush=True)
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
