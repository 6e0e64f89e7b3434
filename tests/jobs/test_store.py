"""The store's guarantees, on SQLite and on the real PostgreSQL: leases, exactly-once chunks, idempotency."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from helpers.services import postgres_schema
from modelapi.jobs.formats_in import Chunk
from modelapi.jobs.runner import dead_owners, maintain, worker_id
from modelapi.jobs.store import CANCELLED, QUEUED, RUNNING, SUCCEEDED, JobStore, sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        s = JobStore(sqlite_url(tmp_path))
        yield s
        s.close()
    else:
        with postgres_schema() as url:
            s = JobStore(url)
            yield s
            s.close()


def new_job(store: JobStore, job_id: str, key: str | None = None, owner: str = "", chunks: int = 3):  # type: ignore[no-untyped-def]
    values = {"id": job_id, "model": "m", "owner": owner, "idempotency_key": key, "fingerprint": "f", "chunk_rows": 2}
    return store.create(values, [Chunk(2, "json", b"[]") for _ in range(chunks)])


def test_create_claim_commit_finish(store: JobStore) -> None:
    job, created = new_job(store, "j1")
    assert created and job.state == QUEUED and job.rows_total == 6 and job.chunks_total == 3
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == "j1" and claimed.state == RUNNING and claimed.attempts == 1
    assert store.claim("w2", 30) is None  # held under a live lease
    assert store.commit_chunk("j1", "w1", 0, 2, b"r0", 30)
    assert not store.commit_chunk("j1", "w1", 0, 2, b"again", 30)  # a chunk commits once
    assert not store.commit_chunk("j1", "w1", 2, 2, b"skip", 30)  # and in order
    assert not store.commit_chunk("j1", "w2", 1, 2, b"r1", 30)  # only by the lease holder
    assert store.commit_chunk("j1", "w1", 1, 2, b"r1", 30)
    assert store.commit_chunk("j1", "w1", 2, 2, b"r2", 30)
    assert store.finish("j1", "w1", SUCCEEDED)
    done = store.get("j1")
    assert done is not None and done.state == SUCCEEDED and done.rows_done == 6 and done.lease_owner is None
    assert list(store.output_chunks("j1", 3)) == [b"r0", b"r1", b"r2"]
    assert store.claim("w2", 30, "j1") is None


def test_an_expired_lease_lets_another_worker_resume(store: JobStore) -> None:
    new_job(store, "j2")
    assert store.claim("w1", 0.2, "j2") is not None
    assert store.commit_chunk("j2", "w1", 0, 2, b"r0", 0.2)
    time.sleep(0.3)
    taken = store.claim("w2", 30)
    assert taken is not None and taken.chunks_done == 1 and taken.attempts == 2
    assert not store.heartbeat("j2", "w1", 30)  # the old worker learns it lost the job
    assert not store.commit_chunk("j2", "w1", 1, 2, b"late", 30)
    assert store.heartbeat("j2", "w2", 30)


def test_cancel_stops_the_worker_and_drops_chunks(store: JobStore) -> None:
    new_job(store, "j3")
    store.claim("w1", 30)
    assert store.commit_chunk("j3", "w1", 0, 2, b"r0", 30)
    assert store.cancel("j3")
    assert not store.cancel("j3")
    assert not store.commit_chunk("j3", "w1", 1, 2, b"r1", 30)
    assert not store.finish("j3", "w1", SUCCEEDED)
    job = store.get("j3")
    assert job is not None and job.state == CANCELLED


def test_idempotency_key_is_unique_per_owner(store: JobStore) -> None:
    _, created = new_job(store, "a1", key="k", owner="alice")
    assert created
    again, created = new_job(store, "a2", key="k", owner="alice")
    assert not created and again.id == "a1"
    assert store.get("a2") is None  # the losing insert left nothing behind
    other, created = new_job(store, "b1", key="k", owner="bob")
    assert created and other.id == "b1"


def test_purge_deletes_only_old_finished_jobs(store: JobStore) -> None:
    new_job(store, "old")
    new_job(store, "live")
    store.cancel("old")
    assert store.purge(time.time() - 3600) == 0
    assert store.purge(time.time() + 1) == 1
    assert store.get("old") is None and store.get("live") is not None


def test_a_dead_local_worker_frees_its_job_at_once(store: JobStore) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = worker_id("x").split(":")
    dead[1] = str(proc.pid)
    owner = ":".join(dead)
    alive = worker_id("y")
    new_job(store, "d1")
    new_job(store, "d2")
    store.claim(owner, 3600, "d1")
    store.claim(alive, 3600, "d2")
    assert dead_owners([owner, alive, "elsewhere:1:abc:z"]) == [owner]
    maintain(store, 3600)
    taken = store.claim("w3", 30)
    assert taken is not None and taken.id == "d1"
    assert store.claim("w4", 30) is None


def test_a_clean_release_costs_no_attempt(store: JobStore) -> None:
    new_job(store, "r1")
    assert store.claim("w1", 3600, "r1") is not None
    store.release("w1")
    again = store.claim("w2", 30)
    assert again is not None and again.id == "r1" and again.attempts == 1


def test_a_waiting_note_is_kept_while_the_worker_holds_the_job(store: JobStore) -> None:
    new_job(store, "w")
    assert store.claim("w1", 30, "w") is not None
    assert store.holds("w", "w1") and not store.holds("w", "w2")
    assert store.set_waiting("w", "w1", '{"rows": 3}')
    assert not store.set_waiting("w", "w2", '{"rows": 4}')  # only the lease holder
    job = store.get("w")
    assert job is not None and job.waiting == '{"rows": 3}'
    assert store.cancel("w")
    job = store.get("w")
    assert job is not None and job.waiting is None
    assert not store.holds("w", "w1") and not store.set_waiting("w", "w1", '{"rows": 5}')  # cancelled: not ours


def test_an_older_jobs_table_gains_the_waiting_column(store: JobStore) -> None:
    """A jobs database written before jobs could wait: opened again, its jobs are kept and can wait; two
    processes opening it at once both succeed (the second finds the column there)."""
    new_job(store, "old")
    with store.engine.begin() as conn:  # what an older release's table looked like
        conn.execute(text("ALTER TABLE modelapi_jobs DROP COLUMN waiting"))
    stores = [JobStore(store.url) for _ in range(2)]
    try:
        job = stores[0].claim("w1", 30, "old")
        assert job is not None and job.waiting is None
        assert stores[1].set_waiting("old", "w1", '{"rows": 1}')
    finally:
        for s in stores:
            s.close()
