"""Jobs run by real `modelapi worker` processes are counted by those workers, on their own `--metrics-port`,
with the server's names and labels; the server counts what it answers (submissions), so the sum over every
target counts each job and each row once. Needs the machine's PostgreSQL and Redis (CI: must), as
tests/e2e/test_jobs_rq.py."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from helpers.jobmodels import csv_text, rows
from helpers.metrics import parse, value
from helpers.services import postgres_schema, redis_url

from .jobs_helpers import SCORER, drop_queue, server_env, wait_status, worker
from .server import serve

CHUNK = 10
ADDRESS = re.compile(r'GET /metrics and the health routes on (http://[^\s"]+)')


def _address(log: Path) -> str:
    found = ADDRESS.search(log.read_text())
    assert found, log.read_text()
    return found.group(1)


def _scrape(url: str) -> tuple[str, Any]:
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return r.text, parse(r.text)


def _total(scrapes: list[Any], name: str, **labels: str) -> float:
    return sum(value(s, name, **labels) or 0.0 for s in scrapes)


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_workers_count_the_jobs_they_run_once_on_their_own_metrics_port(tmp_path: Path) -> None:
    redis = redis_url()
    with postgres_schema() as database:
        queue = f"modelapi-test-{uuid.uuid4().hex[:8]}"
        common = ["--redis-url", redis, "--database-url", database, "--queue", queue]
        ops = ["--host", "127.0.0.1", "--metrics-port", "0"]
        env = server_env(0.02, MODELAPI_JOB_CHUNK_ROWS=str(CHUNK))
        server_args = (SCORER, *common, "--state-dir", str(tmp_path / "state"))
        try:
            with (
                worker([*common, *ops, "--state-dir", str(tmp_path / "a")], env, tmp_path / "a.log"),
                worker([*common, *ops, "--state-dir", str(tmp_path / "b")], env, tmp_path / "b.log"),
                serve(*server_args, env=env, tmp_dir=tmp_path, timeout=120) as server,
                httpx.Client(base_url=server.url, timeout=30) as http,
            ):
                workers = [_address(tmp_path / "a.log"), _address(tmp_path / "b.log")]
                for url in workers:
                    r = httpx.get(f"{url}/v2/health/ready", timeout=10)
                    assert r.status_code == 200 and r.json() == {"ready": True}, r.text
                    assert httpx.get(f"{url}/v2/models", timeout=10).status_code == 404  # metrics and health only

                bad = rows(5)
                bad[2]["a"] = 666.0  # the scorer raises on it: the job fails in its first chunk, nothing committed
                jobs = [csv_text(rows(25, seed=1)), csv_text(rows(12, seed=2)), csv_text(bad), csv_text(rows(8))]
                locations = []
                for body in jobs:
                    r = http.post("/models/scorer/jobs", content=body, headers={"content-type": "text/csv"})
                    assert r.status_code == 202, r.text
                    locations.append(r.headers["location"])
                states = [
                    wait_status(http, loc, lambda s: s["status"] in ("succeeded", "failed"))["status"]
                    for loc in locations
                ]
                assert states == ["succeeded", "succeeded", "failed", "succeeded"]

                # a job's counts reach its worker's values right after its end is committed: poll briefly
                def counted() -> bool:
                    scrapes = [_scrape(url)[1] for url in workers]
                    return _total(scrapes, "modelapi_jobs_finished_total", model="scorer", state="succeeded") == 3

                _eventually(counted)
                texts, scrapes = zip(*(_scrape(url) for url in workers), strict=True)
                server_text, served = _scrape(server.url)

            # the workers: the rows and the ends of the jobs they ran, each once whichever worker ran it
            assert _total(scrapes, "modelapi_jobs_rows_total", model="scorer") == 25 + 12 + 8
            assert _total(scrapes, "modelapi_jobs_finished_total", model="scorer", state="succeeded") == 3
            assert _total(scrapes, "modelapi_jobs_finished_total", model="scorer", state="failed") == 1
            # their chunks went through each worker's data plane, counted as the server counts in-process jobs
            assert _total(scrapes, "modelapi_rows_inferred_total", model="scorer", version="1", protocol="jobs") == 45
            assert _total(scrapes, "modelapi_jobs_submitted_total", model="scorer") == 0
            for text, s in zip(texts, scrapes, strict=True):
                assert value(s, "modelapi_model_loads_total", model="scorer", version="1") == 1
                assert "modelapi_process_cpu_seconds" in text
                # sampled from the jobs database by the servers only: a worker's copy would be counted again
                assert "modelapi_jobs_queued" not in text and "modelapi_jobs_running" not in text

            # the server: the submissions it answered; no job rows or ends, which are the workers' to count
            assert value(served, "modelapi_jobs_submitted_total", model="scorer") == 4
            assert (value(served, "modelapi_jobs_rows_total", model="scorer") or 0) == 0
            assert (value(served, "modelapi_jobs_finished_total", model="scorer", state="succeeded") or 0) == 0
            assert (value(served, "modelapi_jobs_finished_total", model="scorer", state="failed") or 0) == 0
            assert "modelapi_jobs_queued" in server_text

            # sum() over every target, as Prometheus computes it, counts each job once
            everyone = [*scrapes, served]
            assert _total(everyone, "modelapi_jobs_rows_total", model="scorer") == 45
            assert _total(everyone, "modelapi_jobs_finished_total", model="scorer", state="succeeded") == 3
            assert _total(everyone, "modelapi_jobs_submitted_total", model="scorer") == 4
        finally:
            drop_queue(redis, queue)
