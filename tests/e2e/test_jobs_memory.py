"""A job upload's size does not show in the server's memory: a 200 MB JSON list against a 20 MB one.

The upload streams to disk and is split record by record (ijson), so the server process's peak resident memory
(VmHWM from /proc) after the 200 MB upload is within a small margin of its peak after the 20 MB one. A JSON
list is the format that used to be parsed whole (several times its size in Python objects); CSV, JSON Lines
and Parquet were already read in blocks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .server import serve

RECORD = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
MARGIN = 48 * 1024 * 1024  # bytes: a few chunks and buffers, far below what a whole 200 MB list would take


def json_list(size: int) -> Iterator[bytes]:
    """A JSON list of iris records of about ``size`` bytes, generated as it is sent (no Content-Length)."""
    block = b",".join([RECORD] * 10_000)
    yield b"[" + RECORD
    sent = len(RECORD)
    while sent < size:
        yield b"," + block
        sent += len(block) + 1
    yield b"]"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_a_200_mb_upload_takes_no_more_memory_than_a_20_mb_one(tmp_path: Path) -> None:
    args = ("--job-workers", "0", "--state-dir", str(tmp_path / "state"), "--log-level", "warning")
    with serve(*args, tmp_dir=tmp_path, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        pid = server.process.pid
        peaks = []
        for size in (20_000_000, 200_000_000):
            started = time.monotonic()
            r = http.post(
                "/models/iris/jobs", content=json_list(size), headers={"content-type": "application/json"}, timeout=120
            )
            assert r.status_code == 202, r.text
            assert r.json()["progress"]["rows_total"] > size // (len(RECORD) + 1) - 10
            peaks.append(peak_rss(pid))
            took = time.monotonic() - started
            print(f"{size / 1e6:.0f} MB JSON list: accepted in {took:.1f} s, VmHWM {peaks[-1] / 2**20:.0f} MiB")
    assert peaks[1] - peaks[0] < MARGIN, [p / 2**20 for p in peaks]
