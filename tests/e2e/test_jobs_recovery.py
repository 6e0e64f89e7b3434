"""kill -9 of the real server in the middle of a job loses nothing: the restarted server resumes from the last
committed chunk and the result is byte for byte that of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from .jobs_helpers import SCORER, expected_csv, server_env, wait_status, write_input
from .server import serve

CHUNK = 10


def test_kill_9_mid_job_then_restart_resumes_and_matches(tmp_path: Path) -> None:
    state = tmp_path / "state"
    records = write_input(tmp_path / "in.csv", 300)  # 30 chunks of 10 rows, 0.1 s each
    args = (SCORER, "--state-dir", str(state))
    env = server_env(delay=0.1, MODELAPI_JOB_CHUNK_ROWS=str(CHUNK))
    with serve(*args, env=env, tmp_dir=tmp_path, timeout=120) as server, httpx.Client(base_url=server.url) as http:
        r = http.post(
            "/models/scorer/jobs",
            content=(tmp_path / "in.csv").read_bytes(),
            headers={"content-type": "text/csv", "idempotency-key": "batch-1"},
        )
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        wait_status(http, location, lambda s: s["progress"]["chunks_done"] >= 5)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    before = _status_from_db(state, location.rsplit("/", 1)[1])
    assert before["state"] == "running" and 5 <= before["chunks_done"] < 30, before

    restarted_at = time.monotonic()
    with serve(
        *args, env=server_env(delay=0.01, MODELAPI_JOB_CHUNK_ROWS=str(CHUNK)), tmp_dir=tmp_path, timeout=120
    ) as server:
        with httpx.Client(base_url=server.url) as http:
            ready_s = time.monotonic() - restarted_at
            done = wait_status(http, location, lambda s: s["status"] in ("succeeded", "failed"), timeout=60)
            recovered_s = time.monotonic() - restarted_at
            assert done["status"] == "succeeded", done
            assert done["progress"]["rows_done"] == 300
            # the retried submission (same Idempotency-Key) finds the same job, not a new one
            again = http.post(
                "/models/scorer/jobs",
                content=(tmp_path / "in.csv").read_bytes(),
                headers={"content-type": "text/csv", "idempotency-key": "batch-1"},
            )
            assert again.json()["id"] == done["id"]
            result = http.get(f"{location}/result", headers={"accept": "text/csv"})
            assert result.status_code == 200
            assert result.content == expected_csv(records, CHUNK)
        log = server.log()
        assert "resuming 1 job(s) of a worker that died" in log
        assert f"resuming at chunk {before['chunks_done']} of 30" in log  # not from the start
    print(f"\nrestart to ready: {ready_s:.2f} s; restart to job done: {recovered_s:.2f} s")


def _status_from_db(state: Path, job_id: str) -> dict[str, object]:
    from modelapi.jobs.store import JobStore, sqlite_url

    store = JobStore(sqlite_url(state))
    try:
        job = store.get(job_id)
        assert job is not None
        return {"state": job.state, "chunks_done": job.chunks_done}
    finally:
        store.close()
