"""Profile the request path under load: cProfile around uvicorn serving LogisticRegression on 20 features.

    .venv/bin/python scripts/profile_path.py [predict|v2] [conns] [seconds]

Drives the server with wrk (1-row requests) and prints the functions with the most own time.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from measure_dispatch import FEATURES, LogReg, free_port, wait_ready


def main() -> None:
    import uvicorn

    from modelapi.http.app import create_app
    from modelapi.settings import Settings

    route = sys.argv[1] if len(sys.argv) > 1 else "predict"
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    port = free_port()
    app = create_app([LogReg()], Settings(log_level="warning"))
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", access_log=False))
    rng = np.random.default_rng(0)
    values = rng.normal(size=20).tolist()
    if route == "v2":
        body = {
            "inputs": [
                {"name": f, "datatype": "FP64", "shape": [1], "data": [v]}
                for f, v in zip(FEATURES, values, strict=True)
            ]
        }
        path = "/v2/models/logreg/infer"
    else:
        body = dict(zip(FEATURES, values, strict=True))
        path = "/predict"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )

    def load() -> None:
        wait_ready(port)
        time.sleep(0.5)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", f.name, f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(out)
        server.should_exit = True

    threading.Thread(target=load, daemon=True).start()
    profiler = cProfile.Profile()
    profiler.enable()
    server.run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    main()
