"""Scale-out for real: the server sends jobs through Redis to `modelapi worker` processes, results go to
PostgreSQL; kill -9 of the worker mid-job loses nothing. Needs the machine's PostgreSQL and Redis (CI: must)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx

from helpers.services import postgres_schema, redis_url

from .jobs_helpers import SCORER, drop_queue, expected_csv, server_env, wait_status, worker, write_input
from .server import serve

CHUNK = 10


def test_rq_worker_killed_mid_job_loses_nothing(tmp_path: Path) -> None:
    redis = redis_url()
    with postgres_schema() as database:
        queue = f"modelapi-test-{uuid.uuid4().hex[:8]}"
        common = ["--redis-url", redis, "--database-url", database, "--queue", queue]
        records = write_input(tmp_path / "in.csv", 300)
        env = {"MODELAPI_JOB_CHUNK_ROWS": str(CHUNK)}
        server_args = (SCORER, *common, "--state-dir", str(tmp_path / "state"))
        with (
            worker(common, server_env(0.1, **env), tmp_path / "worker-a.log") as first,
            serve(*server_args, env=server_env(**env), tmp_dir=tmp_path, timeout=120) as server,
            httpx.Client(base_url=server.url) as http,
        ):
            r = http.post(
                "/models/scorer/jobs", content=(tmp_path / "in.csv").read_bytes(), headers={"content-type": "text/csv"}
            )
            assert r.status_code == 202, r.text
            location = r.headers["location"]
            mid = wait_status(http, location, lambda s: s["progress"]["chunks_done"] >= 5)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            time.sleep(0.5)
            killed = http.get(location).json()
            assert killed["status"] == "running" and mid["progress"]["chunks_done"] <= killed["progress"]["chunks_done"]
            assert killed["progress"]["chunks_done"] < 30, "the job ended before the kill; make it slower"

            started = time.monotonic()
            with worker(common, server_env(0.01, **env), tmp_path / "worker-b.log"):
                done = wait_status(http, location, lambda s: s["status"] in ("succeeded", "failed"), timeout=60)
                recovered_s = time.monotonic() - started
            assert done["status"] == "succeeded", done
            result = http.get(f"{location}/result", headers={"accept": "text/csv"})
            assert result.content == expected_csv(records, CHUNK)
            log_b = (tmp_path / "worker-b.log").read_text()
            assert f"resuming at chunk {killed['progress']['chunks_done']} of 30" in log_b
        print(f"\nnew worker start to job done: {recovered_s:.2f} s")
        drop_queue(redis, queue)
