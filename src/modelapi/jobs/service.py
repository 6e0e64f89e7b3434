"""The job service: submit, look up, cancel and read jobs, and run one job chunk by chunk through the data plane.

Each chunk's result is committed together with the job's progress, so a worker that dies (kill -9) loses at
most the chunk it was computing; whoever resumes the job starts at the first uncommitted chunk. Chunks are
fixed by the input and the job's chunk size, and a model answers a chunk the same whoever computes it, so the
result equals that of an uninterrupted run.

With a ``RowQuota`` (a process with authentication on), each chunk's rows are charged to the row limits of the
key that submitted the job before they reach the model; over a limit the job waits, and says so in its status
(``quota.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import tracing
from ..context import CallContext
from ..dataplane import DataPlane
from ..db import create_sqlite_file
from ..errors import BadRequest, Conflict, JobNotFound, ModelAPIError, ModelNotFound
from ..inference import InferenceRequest
from ..metrics.jobs import JobsObserver
from ..security.meter import row_checks
from ..security.principal import Principal
from ..settings import Settings
from . import formats_in, formats_out, quota
from .store import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, JobRecord, JobStore, sqlite_url

log = logging.getLogger("modelapi.jobs")
MAX_ATTEMPTS = 5


def owner_of(principal: Principal | None) -> str:
    """The owner recorded with a job: the API key's id, or ``""`` when authentication is off."""
    return principal.key_id if principal is not None else ""


#: a job's chunks: bounded by their size (job_chunk_rows), not by the per-request inference timeout
JOBS = CallContext("jobs", timed=False)
#: how often a job waiting for its key's row limit tries again, and looks whether it was cancelled meanwhile
WAIT_POLL_S = 1.0
#: the longest a job waits for its key's row limit at a time: a longer wait (a day's quota spent) fails the job,
#: saying when the limit admits its rows, so that one key's quota never holds a worker other keys' jobs need;
#: two minutes, the longest a per-minute limit can ask under the sliding window (the rest of the current window,
#: then the previous one's count sliding out)
MAX_WAIT_S = 120.0


@dataclass
class _Waiting:
    """One run of a job, waiting for its key's row limits: the note in the job store (``None``: not waiting), and
    whether the log said so already (once a run: a job held to a per-second limit may wait before every part)."""

    note: str | None = None
    logged: bool = False


class _Stop(Exception):
    """Ends a job's run from inside a chunk: ``state`` ``None`` when the job is no longer ours (cancelled, or
    taken over), else the state and error it ends in."""

    def __init__(self, state: str | None = None, error: str | None = None) -> None:
        super().__init__(state)
        self.state = state
        self.error = error


class JobService:
    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self._store: JobStore | None = None
        #: called with each new job; the runner in use sets it (wake a local worker, or enqueue to Redis)
        self.notify: Callable[[JobRecord], None] = lambda job: None
        #: told of submitted jobs, committed rows and ended jobs (the app sets its MetricsObserver)
        self.observer = JobsObserver()
        #: charges each chunk's rows to the owner's row limits (set where authentication is on); None: nothing
        self.quota: quota.RowQuota | None = None

    # the database ----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.settings.database_url or sqlite_url(self.settings.state_dir)

    def has_store(self) -> bool:
        """Whether jobs may exist already (so a worker must look): opening SQLite would create the file."""
        return self._store is not None or bool(self.settings.database_url) or self._sqlite_path().exists()

    def _sqlite_path(self) -> Path:
        return self.settings.state_dir / "jobs.db"

    def store(self) -> JobStore:
        if self._store is None:
            if not self.settings.database_url:
                create_sqlite_file(self._sqlite_path())
            self._store = JobStore(self.url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # the API ---------------------------------------------------------------------------------------------
    def submit(
        self, model_name: str, path: Path, fmt: formats_in.InputFormat, owner: str, key: str | None, fingerprint: str
    ) -> tuple[JobRecord, bool]:
        """Store a new queued job (``True``), or return the one an earlier try with the same key made."""
        model = self.dataplane.get(model_name)
        store = self.store()
        if key is not None:
            existing = store.find_idempotent(owner, key)
            if existing is not None:
                return _same_request(existing, fingerprint), False
        chunk_rows = min(self.settings.job_chunk_rows, self.settings.max_rows)
        chunks = formats_in.split(path, fmt, model.signature, chunk_rows)
        values = {
            "id": uuid.uuid4().hex,
            "model": model.name,
            "owner": owner,
            "idempotency_key": key,
            "fingerprint": fingerprint,
            "chunk_rows": chunk_rows,
        }
        job, created = store.create(values, chunks)
        if not created:
            return _same_request(job, fingerprint), False
        self.observer.job_submitted(job.model)
        try:
            self.notify(job)
        except Exception:  # the job is stored; maintenance sends it again (Redis down, say)
            log.exception("job %s stored but not dispatched yet; it will be re-sent", job.id)
        return job, True

    def visible(self, job_id: str, principal: Principal | None) -> JobRecord:
        """The job, if it exists and the caller owns it (or is an admin); else 404, saying nothing more."""
        job = self.store().get(job_id) if self.has_store() and len(job_id) <= 64 else None
        if job is None or not (job.owner == owner_of(principal) or (principal and principal.has_scope("admin"))):
            raise JobNotFound(f"no job '{job_id[:64]}'")
        return job

    def cancel(self, job_id: str, principal: Principal | None) -> JobRecord:
        job = self.visible(job_id, principal)
        if job.state in (QUEUED, RUNNING):
            self.store().cancel(job_id)
            job = self.visible(job_id, principal)
            if job.state == CANCELLED:
                self.observer.job_finished(job.model, CANCELLED)
        if job.state != CANCELLED:
            raise Conflict(f"job '{job_id}' has already {job.state}; only a queued or running job can be cancelled")
        return job

    def result(self, job_id: str, principal: Principal | None, fmt: formats_out.OutputFormat) -> Iterator[bytes]:
        job = self.visible(job_id, principal)
        if job.state != SUCCEEDED:
            reason = f": {_error_detail(job)}" if job.state == FAILED else ""
            raise Conflict(f"job '{job_id}' is {job.state}{reason}; its result exists once it has succeeded")
        try:
            signature = self.dataplane.get(job.model).signature
        except ModelNotFound:
            raise Conflict(f"job '{job_id}' ran model '{job.model}', which this server no longer serves") from None
        return formats_out.stream(self.store().output_chunks(job_id, job.chunks_total), fmt, signature)

    # running ---------------------------------------------------------------------------------------------
    async def run(self, job_id: str | None, worker: str) -> JobRecord | None:
        """Claim ``job_id`` (or the next claimable job) and run it to the end; ``None`` if none was claimed."""
        lease = self.settings.job_lease_s
        job = await asyncio.to_thread(self.store().claim, worker, lease, job_id)
        if job is not None:
            await self.process(job, worker)
        return job

    async def process(self, job: JobRecord, worker: str) -> None:
        store = self.store()
        if job.attempts > MAX_ATTEMPTS:
            reason = f"the job was interrupted {MAX_ATTEMPTS} times; giving up"
            await asyncio.to_thread(store.finish, job.id, worker, FAILED, _error(reason))
            self.observer.job_finished(job.model, FAILED)
            return
        if job.chunks_done:
            log.info("job %s: resuming at chunk %d of %d", job.id, job.chunks_done, job.chunks_total)
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job.id, worker, lost))
        try:
            state, error = await self._chunks(job, worker, lost)
            if state is not None:
                await asyncio.to_thread(store.finish, job.id, worker, state, error)
                self.observer.job_finished(job.model, state)
                log.info("job %s %s", job.id, state)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            reason = _error("internal error while running the job; the server log has the details")
            await asyncio.to_thread(store.finish, job.id, worker, FAILED, reason)
            self.observer.job_finished(job.model, FAILED)
        finally:
            beat.cancel()

    async def _chunks(self, job: JobRecord, worker: str, lost: asyncio.Event) -> tuple[str | None, str | None]:
        store = self.store()
        try:
            signature = self.dataplane.get(job.model).signature
        except ModelNotFound:
            return FAILED, _error(f"model '{job.model}' is not served by this worker")
        traced = {"modelapi.job.id": job.id, tracing.MODEL: job.model, "modelapi.job.chunks": job.chunks_total}
        waiting = _Waiting()
        for seq in range(job.chunks_done, job.chunks_total):
            if lost.is_set():
                return None, None
            # one span per chunk (a trace of its own): decode, the data plane's queue and predict, commit
            with tracing.span("job chunk", {**traced, "modelapi.job.chunk": seq}) as span:
                chunk = await asyncio.to_thread(store.input_chunk, job.id, seq)
                if span is not None:
                    span.set_attribute("modelapi.job.rows", chunk.rows)
                first = seq * job.chunk_rows
                try:
                    inputs = await asyncio.to_thread(formats_in.decode_chunk, chunk, signature, first)
                    outputs = await self._score(job, worker, lost, waiting, inputs, chunk.rows, first)
                except formats_in.BadValue as exc:
                    return FAILED, _error(exc.detail, row=exc.row, column=exc.column)
                except (BadRequest, ModelAPIError) as exc:
                    return FAILED, _error(f"rows {first + 1}-{first + chunk.rows}: {exc.detail}")
                except _Stop as stop:
                    return stop.state, stop.error
                data = await asyncio.to_thread(formats_out.outputs_to_ipc, outputs)
                lease = self.settings.job_lease_s
                if not await asyncio.to_thread(store.commit_chunk, job.id, worker, seq, chunk.rows, data, lease):
                    return None, None  # cancelled, or another worker took over
            self.observer.job_rows(job.model, chunk.rows)
        return SUCCEEDED, None

    async def _score(
        self,
        job: JobRecord,
        worker: str,
        lost: asyncio.Event,
        waiting: _Waiting,
        inputs: dict[str, np.ndarray],
        rows: int,
        first: int,
    ) -> dict[str, np.ndarray]:
        """One chunk's outputs; with a ``RowQuota`` and an owner, its rows charged to the owner's row limits first
        (in parts of ``quota.part_rows``, each scored once charged), waiting while a limit does not admit them."""
        rows_quota = self.quota
        if rows_quota is None or not job.owner:  # authentication off (now, or when the job was submitted)
            return (await self.dataplane.infer(job.model, InferenceRequest(inputs), JOBS)).outputs
        parts: list[dict[str, np.ndarray]] = []
        done = 0
        while done < rows:
            # read for every part: a revocation, or new limits, reach a running job within key_cache_s
            record = await rows_quota.owner(job.owner)
            reason = quota.stopped_because(job.owner, record, time.time())
            if reason is not None:
                log.warning("job %s: %s; failing it", job.id, reason)
                raise _Stop(FAILED, _error(f"{reason}; the job stopped before row {first + done + 1}"))
            assert record is not None
            limits = quota.row_limits(record)
            size = rows - done if not limits else min(rows - done, quota.part_rows(limits))
            if limits:
                refusal = await rows_quota.meter.admit(record.key_id, row_checks(limits, size))
                if refusal is not None:
                    # part_rows keeps a part within every limit, so it fits some time; inf only if limits changed
                    wait = refusal.wait_s if math.isfinite(refusal.wait_s) else WAIT_POLL_S
                    if wait > MAX_WAIT_S:
                        note = quota.waiting(record, refusal.limit, size, time.time() + wait)
                        detail = quota.describe_waiting(note, time.time())["detail"].replace("waiting for", "", 1)
                        log.warning(
                            "job %s: its key's row limit admits no more rows within %g s; failing it",
                            job.id,
                            MAX_WAIT_S,
                        )
                        raise _Stop(
                            FAILED,
                            _error(
                                f"stopped before row {first + done + 1}:{detail}, more than a job waits "
                                f"({MAX_WAIT_S:g} s); submit the rest then, or raise the key's limit"
                            ),
                        )
                    note = quota.waiting(record, refusal.limit, size, time.time() + wait)
                    if waiting.note is None or _moved(waiting.note, note):
                        if not await asyncio.to_thread(self.store().set_waiting, job.id, worker, note):
                            raise _Stop()  # cancelled, or taken over
                        waiting.note = note
                        if not waiting.logged:
                            waiting.logged = True
                            detail = quota.describe_waiting(note, time.time())["detail"]
                            log.info("job %s: %s", job.id, detail)
                    await self._pause(job.id, worker, lost, min(wait, WAIT_POLL_S))
                    continue
            if waiting.note is not None:
                if not await asyncio.to_thread(self.store().set_waiting, job.id, worker, None):
                    raise _Stop()
                waiting.note = None
            part = inputs if size == rows else {name: array[done : done + size] for name, array in inputs.items()}
            parts.append((await self.dataplane.infer(job.model, InferenceRequest(part), JOBS)).outputs)
            done += size
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}

    async def _pause(self, job_id: str, worker: str, lost: asyncio.Event, seconds: float) -> None:
        """Sleep while waiting for a row limit; ``_Stop`` as soon as the job is no longer ours (cancelled)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # (not wait_for, which on 3.11 can swallow the worker's cancel)
                await lost.wait()
        if lost.is_set() or not await asyncio.to_thread(self.store().holds, job_id, worker):
            raise _Stop()

    async def _heartbeat(self, job_id: str, worker: str, lost: asyncio.Event) -> None:
        lease = self.settings.job_lease_s
        while True:
            await asyncio.sleep(lease / 3)
            if not await asyncio.to_thread(self.store().heartbeat, job_id, worker, lease):
                lost.set()
                return


def _moved(shown: str, note: str) -> bool:
    """Whether a waiting note differs enough from the one stored to write it: another limit, rows, or a time
    more than a second away (the wait is recomputed at every try, and nearly always agrees)."""
    old, new = json.loads(shown), json.loads(note)
    return bool(old["limit"] != new["limit"] or old["rows"] != new["rows"] or abs(old["until"] - new["until"]) > 1.0)


def _same_request(job: JobRecord, fingerprint: str) -> JobRecord:
    if job.fingerprint != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used for a different request (another model or body); "
            "use a new key for a new batch"
        )
    return job


def _error(detail: str, *, row: int | None = None, column: str | None = None) -> str:
    return json.dumps({"detail": detail, "row": row, "column": column})


def _error_detail(job: JobRecord) -> str:
    return str(json.loads(job.error)["detail"]) if job.error else "unknown reason"


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def describe(job: JobRecord, now: float) -> dict[str, Any]:
    """The job as ``GET /jobs/{id}`` shows it."""
    started, finished = job.started_at, job.finished_at
    running_s = None if started is None else (finished or now) - started
    timings = {
        "queued_s": round(((started or finished or now) - job.created_at), 3),
        "running_s": None if running_s is None else round(running_s, 3),
        "rows_per_s": round(job.rows_done / running_s, 1) if running_s else None,
    }
    body: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "status": job.state,
        "progress": {
            "rows_done": job.rows_done,
            "rows_total": job.rows_total,
            "chunks_done": job.chunks_done,
            "chunks_total": job.chunks_total,
        },
        "created_at": _when(job.created_at),
        "started_at": _when(started),
        "finished_at": _when(finished),
        "timings": timings,
        "error": json.loads(job.error) if job.error else None,
        # what a running job waits for: its key's row limit (quota.py); None while it is not waiting
        "waiting": quota.describe_waiting(job.waiting, now) if job.waiting and job.state == RUNNING else None,
        "links": {"self": f"/jobs/{job.id}", "result": f"/jobs/{job.id}/result"},
    }
    if job.state not in FINISHED:
        body["finished_at"] = None
    return body
