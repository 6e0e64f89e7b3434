"""``modelapi predict``: score a file as a job, on a server (``--url``) or in this process, with a progress bar."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from ..client.errors import ClientError
from ..client.progress import Progress
from ..errors import ModelAPIError
from ..settings import Settings
from . import formats_in, formats_out
from .service import JobService, describe
from .store import FAILED, SUCCEEDED


class JobFailed(Exception):
    """The job ended without a result; the message is the server's reason."""


def output_format(path: Path) -> formats_out.OutputFormat:
    fmt = formats_in.SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"--output {path}: name a .csv, .json, .ndjson or .parquet file")
    return fmt


def input_format(path: Path) -> formats_in.InputFormat:
    fmt = formats_in.SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"--input {path}: expected a .csv, .json, .ndjson or .parquet file")
    return fmt


def _reason(status: dict[str, Any]) -> str:
    error = status.get("error") or {}
    return f"job {status['id']} {status['status']}: {error.get('detail', 'no reason given')}"


def _write(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
    tmp.replace(path)


# remote ---------------------------------------------------------------------------------------------------
def predict_remote(url: str, model: str, src: Path, dst: Path, *, api_key: str | None, err: TextIO) -> dict[str, Any]:
    """Through the Python client: the upload (with an idempotency key, so its retries are safe), the progress
    bar while polling, the result streamed into ``dst``."""
    from ..client import Client

    input_format(src)  # the flags' own messages, before anything is sent
    output_format(dst)
    with Client(url, api_key, timeout=600.0, deadline=1800.0) as client:
        job = client.submit_job(model, src)
        status = job.wait(progress=err)
        job.save(dst)
    return status


# in process -----------------------------------------------------------------------------------------------
def predict_local(service: JobService, model: str, src: Path, dst: Path, *, err: TextIO) -> dict[str, Any]:
    fmt_out = output_format(dst)
    digest = uuid.uuid4().hex
    job, _ = service.submit(model, src, input_format(src), "", None, digest)
    progress = Progress(err)
    store = service.store()

    async def run() -> None:
        task = asyncio.create_task(service.run(job.id, "cli"))
        while not task.done():
            current = store.get(job.id)
            if current is not None:
                progress.show(describe(current, time.time()))
            await asyncio.wait([task], timeout=0.25)
        await task

    asyncio.run(run())
    final = store.get(job.id)
    assert final is not None
    status = describe(final, time.time())
    progress.show(status)
    progress.end()
    if final.state == FAILED or final.state != SUCCEEDED:
        raise JobFailed(_reason(status))
    _write(dst, service.result(job.id, None, fmt_out))
    return status


def run_predict(
    settings: Settings, model: str, src: Path, dst: Path, *, url: str | None, api_key: str | None, err: TextIO
) -> int:
    """The ``predict`` subcommand; returns the exit status. A failed job prints the reason and returns 1."""
    try:
        if url:
            status = predict_remote(url, model, src, dst, api_key=api_key, err=err)
        else:
            status = _in_process(settings, model, src, dst, err)
    except (JobFailed, ModelAPIError, ClientError) as exc:
        print(f"modelapi: error: {getattr(exc, 'detail', exc)}", file=err)
        return 1
    timings = status["timings"]
    print(f"wrote {status['progress']['rows_done']:,} predictions to {dst} ({timings['rows_per_s']} rows/s)", file=err)
    return 0


def _in_process(settings: Settings, model: str, src: Path, dst: Path, err: TextIO) -> dict[str, Any]:
    from ..dataplane import DataPlane

    with tempfile.TemporaryDirectory(prefix="modelapi-predict-") as tmp:
        local = settings.model_copy(update={"state_dir": Path(tmp), "database_url": None, "redis_url": None})
        dataplane = DataPlane.from_settings(local)
        asyncio.run(dataplane.start())
        service = JobService(dataplane, local)
        try:
            return predict_local(service, model, src, dst, err=err)
        finally:
            service.close()
            asyncio.run(dataplane.close())
