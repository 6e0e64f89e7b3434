"""Jobs, their input chunks and their result chunks in one SQL database (SQLite by default, or PostgreSQL).

Every state change is one short transaction guarded by a ``WHERE`` on the job's current state and lease, so
two workers can never both commit the same chunk: a chunk's result and the job's progress are committed
together, and a worker that lost its lease (or whose job was cancelled) finds its update matching no row.
Statements use bound parameters only (SQLAlchemy Core).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..db import add_column, create_tables, make_engine
from .formats_in import Chunk

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

metadata = MetaData()
jobs = Table(
    "modelapi_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("owner", String(128), nullable=False, default=""),
    Column("idempotency_key", String(256), nullable=True),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("chunk_rows", Integer, nullable=False),
    Column("rows_total", Integer, nullable=False, default=0),
    Column("chunks_total", Integer, nullable=False, default=0),
    Column("rows_done", Integer, nullable=False, default=0),
    Column("chunks_done", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("enqueued_at", Float, nullable=True),
    # JSON: what a running job waits for (its owner's row limit, service.py), or NULL while it is not waiting
    Column("waiting", Text, nullable=True),
    UniqueConstraint("owner", "idempotency_key", name="modelapi_jobs_idempotency"),
)
inputs = Table(
    "modelapi_job_inputs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("data", LargeBinary, nullable=False),
)
outputs = Table(
    "modelapi_job_outputs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)


@dataclass(frozen=True)
class JobRecord:
    id: str
    model: str
    owner: str
    idempotency_key: str | None
    fingerprint: str
    state: str
    chunk_rows: int
    rows_total: int
    chunks_total: int
    rows_done: int
    chunks_done: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    lease_owner: str | None
    lease_until: float | None
    attempts: int
    enqueued_at: float | None
    waiting: str | None = None


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'jobs.db'}"


class JobStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url, pool_pre_ping=True)
        create_tables(self.engine, metadata)  # workers and replicas may start together
        add_column(self.engine, jobs.name, "waiting", "TEXT")  # a jobs table made by an older release

    def close(self) -> None:
        self.engine.dispose()

    # reading ---------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return JobRecord(**row) if row else None

    def find_idempotent(self, owner: str, key: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            query = select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == key)
            row = conn.execute(query).mappings().first()
        return JobRecord(**row) if row else None

    def input_chunk(self, job_id: str, seq: int) -> Chunk:
        with self.engine.connect() as conn:
            query = select(inputs.c.rows, inputs.c.kind, inputs.c.data).where(
                inputs.c.job_id == job_id, inputs.c.seq == seq
            )
            row = conn.execute(query).one()
        return Chunk(row.rows, row.kind, bytes(row.data))

    def output_chunks(self, job_id: str, count: int) -> Iterator[bytes]:
        """The result chunks in order, one query each, so a large result never sits in memory whole."""
        for seq in range(count):
            with self.engine.connect() as conn:
                query = select(outputs.c.data).where(outputs.c.job_id == job_id, outputs.c.seq == seq)
                data = conn.execute(query).scalar_one()
            yield bytes(data)

    def lease_owners(self) -> list[str]:
        with self.engine.connect() as conn:
            query = select(jobs.c.lease_owner).where(jobs.c.state == RUNNING, jobs.c.lease_owner.is_not(None))
            return sorted({str(owner) for owner in conn.execute(query).scalars()})

    # writing ---------------------------------------------------------------------------------------------
    def create(self, job: dict[str, Any], chunks: Iterable[Chunk]) -> tuple[JobRecord, bool]:
        """Insert a queued job with its input; ``(existing, False)`` when its idempotency key was taken."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(jobs).values(**job, state=QUEUED, created_at=time.time()))
                rows = count = 0
                for count, chunk in enumerate(chunks, 1):
                    values = {"job_id": job["id"], "seq": count - 1, "rows": chunk.rows}
                    conn.execute(insert(inputs).values(**values, kind=chunk.kind, data=chunk.data))
                    rows += chunk.rows
                conn.execute(update(jobs).where(jobs.c.id == job["id"]).values(rows_total=rows, chunks_total=count))
        except IntegrityError:
            existing = self.find_idempotent(job["owner"], job["idempotency_key"] or "")
            if existing is None:
                raise
            return existing, False
        created = self.get(job["id"])
        assert created is not None
        return created, True

    def claim(self, worker: str, lease_s: float, job_id: str | None = None) -> JobRecord | None:
        """Take ``job_id`` (or the oldest claimable job): queued, or running under an expired lease."""
        now = time.time()
        claimable = or_(jobs.c.state == QUEUED, (jobs.c.state == RUNNING) & (jobs.c.lease_until < now))
        if job_id is None:  # read outside the write transaction: SQLite cannot upgrade a reader under WAL
            with self.engine.connect() as conn:
                query = select(jobs.c.id).where(claimable).order_by(jobs.c.created_at).limit(1)
                job_id = conn.execute(query).scalar()
            if job_id is None:
                return None
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, claimable)
                .values(
                    state=RUNNING,
                    lease_owner=worker,
                    lease_until=now + lease_s,
                    attempts=jobs.c.attempts + 1,
                    waiting=None,
                )
            )
            if result.rowcount != 1:
                return None
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.started_at.is_(None)).values(started_at=now))
        return self.get(job_id)

    def _held(self, job_id: str, worker: str) -> Any:
        return (jobs.c.id == job_id) & (jobs.c.lease_owner == worker) & (jobs.c.state == RUNNING)

    def holds(self, job_id: str, worker: str) -> bool:
        """Whether ``worker`` still runs the job (not cancelled, not taken over): one read, no write."""
        with self.engine.connect() as conn:
            return conn.execute(select(jobs.c.id).where(self._held(job_id, worker))).first() is not None

    def set_waiting(self, job_id: str, worker: str, waiting: str | None) -> bool:
        """Record what the running job waits for (``None``: nothing); ``False``: the job is not ours now."""
        with self.engine.begin() as conn:
            query = update(jobs).where(self._held(job_id, worker)).values(waiting=waiting)
            return bool(conn.execute(query).rowcount == 1)

    def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool:
        with self.engine.begin() as conn:
            query = update(jobs).where(self._held(job_id, worker)).values(lease_until=time.time() + lease_s)
            return bool(conn.execute(query).rowcount == 1)

    def commit_chunk(self, job_id: str, worker: str, seq: int, rows: int, data: bytes, lease_s: float) -> bool:
        """Store chunk ``seq``'s result and advance progress, atomically; ``False``: the job is not ours now."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(self._held(job_id, worker), jobs.c.chunks_done == seq)
                .values(chunks_done=seq + 1, rows_done=jobs.c.rows_done + rows, lease_until=time.time() + lease_s)
            )
            if result.rowcount != 1:
                return False
            conn.execute(delete(outputs).where(outputs.c.job_id == job_id, outputs.c.seq == seq))
            conn.execute(insert(outputs).values(job_id=job_id, seq=seq, rows=rows, data=data))
        return True

    def finish(self, job_id: str, worker: str, state: str, error: str | None = None) -> bool:
        with self.engine.begin() as conn:
            values = {"state": state, "error": error, "finished_at": time.time(), "lease_owner": None, "waiting": None}
            if conn.execute(update(jobs).where(self._held(job_id, worker)).values(**values)).rowcount != 1:
                return False
            conn.execute(delete(inputs).where(inputs.c.job_id == job_id))
            if state != SUCCEEDED:
                conn.execute(delete(outputs).where(outputs.c.job_id == job_id))
        return True

    def cancel(self, job_id: str) -> bool:
        with self.engine.begin() as conn:
            active = (jobs.c.id == job_id) & jobs.c.state.in_([QUEUED, RUNNING])
            values = {"state": CANCELLED, "finished_at": time.time(), "lease_owner": None, "waiting": None}
            if conn.execute(update(jobs).where(active).values(**values)).rowcount != 1:
                return False
            conn.execute(delete(inputs).where(inputs.c.job_id == job_id))
            conn.execute(delete(outputs).where(outputs.c.job_id == job_id))
        return True

    def release(self, worker: str) -> None:
        """Let another worker resume this worker's jobs at once (a clean shutdown, which costs no attempt)."""
        with self.engine.begin() as conn:
            held = (jobs.c.lease_owner == worker) & (jobs.c.state == RUNNING)
            conn.execute(update(jobs).where(held).values(lease_until=0, attempts=jobs.c.attempts - 1))

    def expire_leases(self, owners: Iterable[str]) -> int:
        owners = list(owners)
        if not owners:
            return 0
        with self.engine.begin() as conn:
            query = update(jobs).where(jobs.c.lease_owner.in_(owners), jobs.c.state == RUNNING).values(lease_until=0)
            return int(conn.execute(query).rowcount)

    def needing_enqueue(self, stale_before: float) -> list[JobRecord]:
        """Jobs a queue must (re)deliver: running under an expired lease, or queued and not sent lately."""
        now = time.time()
        orphan = (jobs.c.state == RUNNING) & (jobs.c.lease_until < now)
        waiting = (jobs.c.state == QUEUED) & or_(jobs.c.enqueued_at.is_(None), jobs.c.enqueued_at < stale_before)
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs).where(or_(orphan, waiting)).order_by(jobs.c.created_at)).mappings()
            return [JobRecord(**row) for row in rows]

    def mark_enqueued(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(enqueued_at=time.time()))

    def purge(self, finished_before: float) -> int:
        """Delete jobs (and their chunks) that finished before the given time; returns how many."""
        with self.engine.connect() as conn:
            query = select(jobs.c.id).where(jobs.c.state.in_(FINISHED), jobs.c.finished_at < finished_before)
            ids = list(conn.execute(query).scalars())
        if not ids:
            return 0
        with self.engine.begin() as conn:
            for table in (inputs, outputs):
                conn.execute(delete(table).where(table.c.job_id.in_(ids)))
            conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
        return len(ids)
