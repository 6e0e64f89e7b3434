"""Jobs over HTTP: ``POST /models/{name}/jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}``.

The upload (a request body, decompressed as its ``Content-Encoding`` says, or a multipart file field) streams
to a temporary file, never whole into memory; writing it and splitting it into stored chunks happen in worker
threads, off the event loop. A job belongs to the API key that submitted it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from ...errors import InvalidInput, UnsupportedMediaType
from ...http.responses import json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ...jobs import formats_in, formats_out
from ...jobs.service import JobService, describe, owner_of
from ...security.principal import current_principal
from ..base import Protocol

_KEY = re.compile(r"^[\x21-\x7e]{1,256}$")
_WRITE_BYTES = 1 << 20  # upload bytes gathered on the event loop per write in a worker thread
_SUFFIX = {"json": ".json", "ndjson": ".ndjson", "csv": ".csv", "parquet": ".parquet"}


def routes(services: Services) -> list[BaseRoute]:
    if services.jobs is None:
        return []
    service = services.jobs.service

    async def submit(request: Request) -> Response:
        return await _submit(service, services, request)

    async def status(request: Request) -> Response:
        job = await run_in_threadpool(service.visible, request.path_params["id"], current_principal(request))
        return json_response(describe(job, time.time()))

    async def cancel(request: Request) -> Response:
        job = await run_in_threadpool(service.cancel, request.path_params["id"], current_principal(request))
        return json_response(describe(job, time.time()))

    async def result(request: Request) -> Response:
        job_id = request.path_params["id"]
        fmt = formats_out.negotiate(request.headers.get("accept"), request.query_params.get("format"))
        chunks = await run_in_threadpool(service.result, job_id, current_principal(request), fmt)
        filename = f"job-{job_id}{_SUFFIX[fmt]}"
        headers = {"content-disposition": f'attachment; filename="{filename}"'}
        return StreamingResponse(chunks, media_type=formats_out.MEDIA[fmt], headers=headers)

    async def job(request: Request) -> Response:
        return await (cancel(request) if request.method == "DELETE" else status(request))

    return [
        # the upload's own limit (max_upload_bytes), enforced by the middleware as it streams in
        ProtocolRoute("/models/{name}/jobs", submit, methods=["POST"], body_limit=services.settings.max_upload_bytes),
        ProtocolRoute("/jobs/{id}", job, methods=["GET", "DELETE"]),  # one route, so a 405 lists both in Allow
        ProtocolRoute("/jobs/{id}/result", result, methods=["GET"]),
    ]


async def _submit(service: JobService, services: Services, request: Request) -> Response:
    name = request.path_params["name"]
    principal = current_principal(request)  # a key's model list was checked by the route (http/routing.guard)
    service.dataplane.get(name)
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.match(key):
        raise InvalidInput("Idempotency-Key: expected 1 to 256 visible ASCII characters, e.g. a UUID")
    tmp = await run_in_threadpool(tempfile.TemporaryDirectory, prefix="modelapi-job-")
    try:
        path = Path(tmp.name) / "input"
        fmt, digest = await _spool(services, request, path)
        fingerprint = hashlib.sha256(f"{name}\0{fmt}\0{digest}".encode()).hexdigest()
        job, created = await run_in_threadpool(service.submit, name, path, fmt, owner_of(principal), key, fingerprint)
    finally:
        with anyio.CancelScope(shield=True):  # removing a large upload is disk work too
            await run_in_threadpool(tmp.cleanup)
    headers = {"location": f"/jobs/{job.id}"}
    if not created:
        headers["idempotent-replayed"] = "true"
    return json_response(describe(job, time.time()), 202, headers=headers)


async def _spool(services: Services, request: Request, path: Path) -> tuple[formats_in.InputFormat, str]:
    """Write the upload to ``path``; returns its format and SHA-256."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        if services.inflater(request) is not None:
            raise UnsupportedMediaType(
                "a multipart upload cannot have a Content-Encoding; send the compressed file as the request body"
            )
        form = await request.form(max_files=1, max_fields=10)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("multipart upload: expected the batch as a file field named 'file'")
            fmt = formats_in.format_of(upload.content_type, upload.filename or "")
            return fmt, await _write(path, _upload_blocks(upload))
        finally:
            await form.close()
    fmt = formats_in.format_of(content_type)
    return fmt, await _write(path, services.upload(request))


async def _upload_blocks(upload: UploadFile) -> AsyncIterator[bytes]:
    while block := await upload.read(_WRITE_BYTES):  # a worker thread reads it once it is on disk
        yield block


async def _write(path: Path, blocks: AsyncIterator[bytes]) -> str:
    """Write ``blocks`` to ``path`` from a worker thread, about a MiB at a time; returns their SHA-256.

    The event loop only gathers blocks, so other requests keep being served while a large upload spools."""
    digest = hashlib.sha256()
    out = await run_in_threadpool(path.open, "wb")
    try:
        pending: list[bytes] = []
        size = 0
        async for block in blocks:
            pending.append(block)
            size += len(block)
            if size >= _WRITE_BYTES:
                await run_in_threadpool(_append, out, digest, pending)
                pending, size = [], 0
        if pending:
            await run_in_threadpool(_append, out, digest, pending)
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(out.close)
    return digest.hexdigest()


def _append(out: BinaryIO, digest: hashlib._Hash, blocks: list[bytes]) -> None:
    """Runs in a worker thread: hash and write some blocks of the upload."""
    for block in blocks:
        digest.update(block)
        out.write(block)


PROTOCOL = Protocol("jobs", routes)
