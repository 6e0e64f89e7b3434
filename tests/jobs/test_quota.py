"""A job's rows count against the row limits of the key that submitted it, in process (one meter per process):
charged before the model, then requests of the key are refused over what is left; over a limit the job waits
and says so, then resumes; cancelling and revoking while it waits; keys without limits cost nothing. Through
Redis with a `modelapi worker`: tests/e2e/test_jobs_quota.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.jobmodels import csv_text, rows
from helpers.jobs import AppFactory, wait_for
from helpers.keys import create_key
from modelapi.jobs import quota
from modelapi.security.key_limits import Limit
from modelapi.security.keys import KeyStore

CSV = {"content-type": "text/csv"}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _submit(client: TestClient, key: str, n: int) -> str:
    r = client.post("/models/scorer/jobs", content=csv_text(rows(n)), headers={**CSV, **_auth(key)})
    assert r.status_code == 202, r.text
    return str(r.headers["location"])


def _status(client: TestClient, location: str, key: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(location, headers=_auth(key)).json()
    return body


def _until(client: TestClient, location: str, key: str, done: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = _status(client, location, key)
        if done(body):
            return body
        assert time.monotonic() < deadline, f"timed out; last status: {body}"
        time.sleep(0.02)


def _finished(body: dict[str, Any]) -> bool:
    return body["status"] in ("succeeded", "failed", "cancelled")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"  # where make_client keeps the jobs; the keys go there too


def _client(make_client: AppFactory, **overrides: Any) -> TestClient:
    return make_client(auth="on", rate_limit=0, **overrides)


def test_a_job_is_charged_its_rows_and_the_key_then_has_only_the_rest(make_client: AppFactory, state: Path) -> None:
    key = create_key(state, "batch", limits=("25rows/day",))
    client = _client(make_client)
    location = _submit(client, key, 10)
    done = _until(client, location, key, _finished)
    assert done["status"] == "succeeded", done
    assert done["progress"]["rows_done"] == 10 and done["waiting"] is None
    assert len(client.get(f"{location}/result", headers=_auth(key)).json()) == 10
    # 10 of 25 rows spent by the job: 16 more would go over, 15 are exactly the rest
    r = client.post("/models/scorer/predict", json=rows(16), headers=_auth(key))
    assert r.status_code == 429, r.text
    assert "a request of 16 rows would take API key 'batch'" in r.json()["detail"]
    assert "over its quota of 25 rows per day (25rows/day)" in r.json()["detail"]
    assert client.post("/models/scorer/predict", json=rows(15), headers=_auth(key)).status_code == 200
    assert client.post("/models/scorer/predict", json=rows(1), headers=_auth(key)).status_code == 429


def test_a_job_over_the_limit_waits_saying_so_then_resumes(make_client: AppFactory, state: Path) -> None:
    """6 rows a second, chunks of 4: charged in parts of 3 (half the limit), the job waits a second or so in
    the middle, and its result is that of the same job without a limit."""
    slow = create_key(state, "slow", limits=("6rows/s",))
    free = create_key(state, "free")
    client = _client(make_client)
    location = _submit(client, slow, 8)
    started = time.monotonic()
    waiting = _until(client, location, slow, lambda s: s["waiting"] is not None or _finished(s))
    assert waiting["status"] == "running", waiting
    note = waiting["waiting"]
    key_id = slow.split("_")[1]
    assert note["reason"] == "row_limit" and note["key"] == f"mk_{key_id}" and note["limit"] == "6rows/s"
    assert note["detail"].startswith(
        f"waiting for API key 'slow' (mk_{key_id}): its rate limit of 6 rows per second (6rows/s) admits the next "
    )
    # the sliding window admits the next rows at most 1.5 s after the first ones (all charged in one fixed window)
    seconds = note["detail"].rsplit(" rows in about ", 1)[1]
    assert note["rows"] in (1, 3) and seconds in ("1 s", "2 s"), note
    done = _until(client, location, slow, _finished)
    took = time.monotonic() - started
    assert done["status"] == "succeeded" and done["waiting"] is None, done
    assert 0.5 < took < 5, took  # it waited for the window, and went on once admitted
    result = client.get(f"{location}/result", headers=_auth(slow)).json()
    unlimited = _submit(client, free, 8)
    assert _until(client, unlimited, free, _finished)["status"] == "succeeded"
    assert result == client.get(f"{unlimited}/result", headers=_auth(free)).json()


def test_cancel_while_waiting_frees_the_worker(make_client: AppFactory, state: Path) -> None:
    """The one job worker waits for a minute's limit; the job is cancelled at once, and the worker, seeing it
    within a second (not at its next heartbeat, a third of the 30 s lease away), runs the next job."""
    limited = create_key(state, "limited", limits=("4rows/min",))
    other = create_key(state, "other")
    client = _client(make_client, job_workers=1, job_lease_s=30.0)
    location = _submit(client, limited, 12)
    _until(client, location, limited, lambda s: s["waiting"] is not None)
    cancelled = client.delete(location, headers=_auth(limited))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["waiting"] is None
    started = time.monotonic()
    next_job = _submit(client, other, 4)
    assert _until(client, next_job, other, _finished, timeout=8)["status"] == "succeeded"
    assert time.monotonic() - started < 5
    after = _status(client, location, limited)
    assert after["status"] == "cancelled" and after["progress"]["rows_done"] == 4  # the first chunk's 2 + 2


def test_a_wait_longer_than_a_job_waits_fails_it_and_frees_the_worker(make_client: AppFactory, state: Path) -> None:
    """A day's quota spent: the job does not hold the one worker for a day (other keys' jobs would wait behind
    it); it fails before its next rows, saying when the quota admits them."""
    spent = create_key(state, "spent", limits=("5rows/day",))
    other = create_key(state, "other")
    client = _client(make_client, job_workers=1)
    location = _submit(client, spent, 20)
    done = _until(client, location, spent, _finished)
    assert done["status"] == "failed" and done["waiting"] is None
    detail = done["error"]["detail"]
    assert "its quota of 5 rows per day (5rows/day) admits the next" in detail, detail
    assert "more than a job waits (120 s)" in detail and detail.startswith("stopped before row ")
    assert _until(client, _submit(client, other, 4), other, _finished, timeout=8)["status"] == "succeeded"


def test_a_key_whose_limit_is_lifted_resumes_at_once(make_client: AppFactory, state: Path) -> None:
    """`keys update --no-limits` (here: another store object, as the command is) reaches the waiting job
    within key_cache_s."""
    key = create_key(state, "lifted", limits=("4rows/min",))
    client = _client(make_client, key_cache_s=0.2)
    location = _submit(client, key, 12)
    _until(client, location, key, lambda s: s["waiting"] is not None)
    store = KeyStore.open(state, None)
    try:
        store.set_limits(key.split("_")[1], ())
    finally:
        store.close()
    done = _until(client, location, key, _finished, timeout=5)
    assert done["status"] == "succeeded" and done["progress"]["rows_done"] == 12


def test_revoking_the_key_fails_its_running_job(make_client: AppFactory, state: Path) -> None:
    key = create_key(state, "leaver", limits=("4rows/min",))
    admin = create_key(state, "ops", scope="admin")
    client = _client(make_client, key_cache_s=0.2)
    location = _submit(client, key, 12)
    _until(client, location, key, lambda s: s["waiting"] is not None)
    store = KeyStore.open(state, None)
    try:
        store.revoke(key.split("_")[1])
    finally:
        store.close()
    done = _until(client, location, admin, _finished, timeout=5)  # the revoked key may not look any more
    assert done["status"] == "failed", done
    assert done["error"]["detail"] == (
        f"API key 'leaver' (mk_{key.split('_')[1]}), which submitted this job, was revoked; the job stopped "
        "before row 5"
    )
    assert done["progress"]["rows_done"] == 4 and done["waiting"] is None


def test_a_key_without_row_limits_is_not_charged(make_client: AppFactory, state: Path) -> None:
    """A key without limits, or with request limits only: its job never reaches the meter."""
    plain = create_key(state, "plain")
    requests_only = create_key(state, "requests", limits=("1000/min",))
    client = _client(make_client)
    services: Any = client.app.state.services  # type: ignore[attr-defined]
    meter = services.jobs.service.quota.meter
    assert meter is services.limits.meter  # the one meter requests are charged through
    charged: list[tuple[str, Any]] = []
    admit = meter.admit

    async def spy(key_id: str, checks: Any) -> Any:
        charged.append((key_id, checks))
        return await admit(key_id, checks)

    meter.admit = spy
    for key in (plain, requests_only):
        assert _until(client, _submit(client, key, 10), key, _finished)["status"] == "succeeded"
    assert not any(lim.what == "rows" for _, checks in charged for lim, _need, _cost in checks)


def test_without_authentication_jobs_are_not_charged(make_client: AppFactory) -> None:
    client = make_client(auth="off")
    assert client.app.state.services.jobs.service.quota is None  # type: ignore[attr-defined]
    r = client.post("/models/scorer/jobs", content=csv_text(rows(6)), headers=CSV)
    assert wait_for(client, r.headers["location"], {"succeeded", "failed"})["status"] == "succeeded"


@pytest.mark.parametrize(("counts", "part"), [((1,), 1), ((2,), 1), ((3,), 2), ((1000, 7), 4), ((10_000,), 5000)])
def test_rows_are_charged_in_parts_of_half_the_smallest_row_limit(counts: tuple[int, ...], part: int) -> None:
    assert quota.part_rows([Limit("rows", count, 60) for count in counts]) == part
