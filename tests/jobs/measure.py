"""Measure a 1,000,000-row CSV job on the bundled demo model: in process, through the server, and the time a
restarted server takes to resume a job after kill -9. Not a test (it takes minutes); run it by hand:

    .venv/bin/python tests/jobs/measure.py [ROWS]

Prints one line per measurement; docs/jobs.md records the numbers.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MODELAPI = [sys.executable, "-m", "modelapi"]


def make_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        f.write(",".join(FEATURES) + "\n")
        for start in range(0, rows, 100_000):
            block = rng.uniform(0.1, 7.9, (min(100_000, rows - start), 4)).round(1)
            f.write("\n".join(",".join(f"{v:.1f}" for v in row) for row in block) + "\n")


def run_measured(cmd: list[str]) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS in MiB of the largest child so far, stderr) of a child process."""
    started = time.monotonic()
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return proc.returncode, wall, peak, proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [*MODELAPI, "serve", "--state-dir", str(state), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def status(url: str, location: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + location, timeout=30).json()
    return body


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="modelapi-measure-"))
    data = tmp / "in.csv"
    make_csv(data, rows)
    print(f"input: {rows:,} rows, {data.stat().st_size / 1e6:.1f} MB CSV ({tmp})")

    # 1. in process (first a 10-row file: the peak of start-up alone, models and imports)
    tiny = tmp / "tiny.csv"
    make_csv(tiny, 10)
    cmd = [*MODELAPI, "predict", "--model", "iris", "--input", str(tiny), "--output", str(tmp / "tiny.out.csv")]
    code, _, baseline, err = run_measured(cmd)
    assert code == 0, err
    cmd = [*MODELAPI, "predict", "--model", "iris", "--input", str(data), "--output", str(tmp / "local.csv")]
    code, wall, peak, err = run_measured(cmd)
    assert code == 0, err
    last = err.strip().splitlines()[-1]
    print(f"in process: {last}; wall {wall:.1f} s incl. start-up; peak RSS {peak} MiB (10 rows: {baseline} MiB)")

    # 2. through the server
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp / "state", port, tmp / "server.log")
    base_rss = peak_rss_mib(server.pid)
    started = time.monotonic()
    cmd = [*MODELAPI, "predict", "--model", "iris", "--input", str(data), "--output", str(tmp / "server.csv")]
    code, wall, _, err = run_measured([*cmd, "--url", url])
    assert code == 0, err
    print(
        f"through the server: {err.strip().splitlines()[-1]}; client wall {wall:.1f} s "
        f"(upload, run, download: {time.monotonic() - started:.1f} s); "
        f"server peak RSS {peak_rss_mib(server.pid)} MiB (idle after start-up: {base_rss} MiB)"
    )
    same = (tmp / "local.csv").read_bytes() == (tmp / "server.csv").read_bytes()
    print(f"in-process and server results identical: {same}")

    # 3. kill -9 mid-job, restart, resume
    r = httpx.post(
        f"{url}/models/iris/jobs", content=data.read_bytes(), headers={"content-type": "text/csv"}, timeout=600
    )
    location = r.headers["location"]
    total = r.json()["progress"]["chunks_total"]
    while status(url, location)["progress"]["chunks_done"] < total * 0.4:
        time.sleep(0.02)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    killed_at = time.monotonic()
    server = start_server(tmp / "state", port, tmp / "server.log")
    ready = time.monotonic() - killed_at
    first = status(url, location)["progress"]["chunks_done"]
    while True:
        body = status(url, location)
        if body["progress"]["chunks_done"] > first or body["status"] != "running":
            break
        time.sleep(0.01)
    resumed = time.monotonic() - killed_at
    while body["status"] == "running":
        time.sleep(0.1)
        body = status(url, location)
    done = time.monotonic() - killed_at
    res = httpx.get(f"{url}{location}/result", headers={"accept": "text/csv"}, timeout=600)
    print(
        f"kill -9 at chunk {first}/{total}: restart to ready {ready:.1f} s, "
        f"to the next chunk committed {resumed:.1f} s, "
        f"to the job done {done:.1f} s; status {body['status']}; "
        f"result identical to the uninterrupted run: {res.content == (tmp / 'server.csv').read_bytes()}"
    )
    server.send_signal(signal.SIGTERM)
    server.wait()


if __name__ == "__main__":
    main()
