"""Shared by the job end-to-end tests: the scorer model on the server's path, inputs, expected results, and
`modelapi worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from helpers.jobmodels import Scorer, csv_text, rows
from modelapi.jobs import formats_out

from .server import TESTS_DIR

__all__ = ["SCORER", "Scorer", "csv_text", "rows"]

SCORER = "helpers.jobmodels:Scorer"  # the scorer by module path, as a server or worker process imports it


def server_env(delay: float = 0.0, **extra: str) -> dict[str, str]:
    """Environment for a server or worker process that imports ``SCORER`` (tests/ on its path)."""
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "MODELAPI_TEST_DELAY": str(delay), **extra}


def expected_csv(records: list[dict[str, Any]], chunk_rows: int) -> bytes:
    """The CSV result of an uninterrupted run: the scorer applied chunk by chunk, written by the result writer."""
    model = Scorer()
    chunks = []
    for start in range(0, len(records), chunk_rows):
        part = records[start : start + chunk_rows]
        inputs = {
            "a": np.array([r["a"] for r in part], dtype=np.float64),
            "b": np.array([r["b"] for r in part], dtype=np.int64),
            "tag": np.array([r["tag"] for r in part], dtype=object),
        }
        chunks.append(formats_out.outputs_to_ipc(model.predict(inputs)))
    return b"".join(formats_out.stream(chunks, "csv", Scorer.signature))


def wait_status(http: httpx.Client, location: str, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until ``done(status_body)`` is true."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(location).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last status: {body}")
        time.sleep(0.05)


def write_input(path: Path, n: int) -> list[dict[str, Any]]:
    records = rows(n, seed=3)
    path.write_text(csv_text(records))
    return records


@contextmanager
def worker(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``modelapi worker SCORER ARGS`` until it listens on its queue; SIGTERM (then kill) afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelapi", "worker", SCORER, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            text=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Listening on" not in log.read_text() and "listening on" not in log.read_text().lower():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def drop_queue(url: str, name: str) -> None:
    """Delete a test's RQ queue and its messages from the machine's Redis."""
    from modelapi.jobs.rq_runner import connect, make_queue

    make_queue(connect(url), name).delete(delete_jobs=True)
