"""A job scored by a `modelapi worker` counts against its key's row limits in the same Redis counters the server
charges requests to, and a job over a limit waits in the worker while the server's status says so. Needs the
machine's PostgreSQL and Redis (CI: must), as tests/e2e/test_jobs_rq.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from helpers.jobmodels import csv_text, rows
from helpers.keys import create_key
from helpers.services import postgres_schema, redis_url

from .jobs_helpers import SCORER, drop_queue, server_env, wait_status, worker
from .server import serve


def _finished(status: dict[str, object]) -> bool:
    return status["status"] in ("succeeded", "failed", "cancelled")


def test_a_workers_job_counts_in_the_servers_redis_and_waits_there(tmp_path: Path) -> None:
    import redis as redis_client

    url = redis_url()
    with postgres_schema() as database:
        queue = f"modelapi-test-{uuid.uuid4().hex[:8]}"
        common = ["--redis-url", url, "--database-url", database, "--queue", queue]
        batch = create_key(tmp_path, "batch", database_url=database, limits=("25rows/day",))
        slow = create_key(tmp_path, "slow", database_url=database, limits=("4rows/s",))
        env = server_env(MODELAPI_JOB_CHUNK_ROWS="4")
        server_args = (SCORER, *common, "--state-dir", str(tmp_path / "state"), "--auth", "on", "--rate-limit", "0")
        with (
            worker(common, env, tmp_path / "worker.log"),
            serve(*server_args, env=env, tmp_dir=tmp_path, timeout=120) as server,
            httpx.Client(base_url=server.url, timeout=30) as http,
        ):

            def submit(key: str, n: int) -> str:
                headers = {"content-type": "text/csv", "authorization": f"Bearer {key}"}
                r = http.post("/models/scorer/jobs", content=csv_text(rows(n)), headers=headers)
                assert r.status_code == 202, r.text
                return str(r.headers["location"])

            # 10 rows scored by the worker: in Redis, where the server's next request of the key is charged
            location = submit(batch, 10)
            http.headers["authorization"] = f"Bearer {batch}"
            done = wait_status(http, location, _finished)
            assert done["status"] == "succeeded" and done["progress"]["rows_done"] == 10, done
            counter = f"modelapi:limit:{{{batch.split('_')[1]}}}:rows:86400"
            shared = redis_client.Redis.from_url(url)
            try:
                assert int(shared.hget(counter, "c") or 0) == 10
                r = http.post("/models/scorer/predict", json=rows(16))
                assert r.status_code == 429 and "over its quota of 25 rows per day" in r.json()["detail"], r.text
                assert http.post("/models/scorer/predict", json=rows(15)).status_code == 200
                assert int(shared.hget(counter, "c") or 0) == 25
            finally:
                shared.close()

            # 4 rows a second, chunks of 4, parts of 2: the worker waits, and the server's status says so
            location = submit(slow, 8)
            http.headers["authorization"] = f"Bearer {slow}"
            waiting = wait_status(http, location, lambda s: s["waiting"] is not None or _finished(s), timeout=30)
            assert waiting["status"] == "running", waiting
            detail = waiting["waiting"]["detail"]
            assert "its rate limit of 4 rows per second (4rows/s) admits the next 2 rows" in detail
            done = wait_status(http, location, _finished, timeout=30)
            assert done["status"] == "succeeded" and done["waiting"] is None, done
        log = (tmp_path / "worker.log").read_text()
        assert "waiting for API key 'slow'" in log
        drop_queue(url, queue)
