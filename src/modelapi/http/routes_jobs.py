"""Jobs over HTTP: ``POST /models/{name}/jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result``, ``DELETE /jobs/{id}``.

The upload (a request body or a multipart file field) streams to a temporary file, never whole into memory,
and is then split into stored chunks off the event loop. A job belongs to the API key that submitted it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .. import jsonutil
from ..errors import InvalidInput, ModelNotFound
from ..jobs import formats_in, formats_out
from ..jobs.service import JobService, describe, owner_of
from ..security.principal import current_principal

_KEY = re.compile(r"^[\x21-\x7e]{1,256}$")
_SUFFIX = {"json": ".json", "ndjson": ".ndjson", "csv": ".csv", "parquet": ".parquet"}


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs.service
    return service


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonutil.dumps(body), status_code=status, headers=headers, media_type="application/json")


async def submit(request: Request) -> Response:
    service = _service(request)
    name = request.path_params["name"]
    principal = current_principal(request)
    if principal is not None and not principal.can_use(name):
        raise ModelNotFound(f"no model named '{name}'")
    service.dataplane.get(name)
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.match(key):
        raise InvalidInput("Idempotency-Key: expected 1 to 256 visible ASCII characters, e.g. a UUID")
    with tempfile.TemporaryDirectory(prefix="modelapi-job-") as tmp:
        path = Path(tmp) / "input"
        fmt, digest = await _spool(request, path)
        fingerprint = hashlib.sha256(f"{name}\0{fmt}\0{digest}".encode()).hexdigest()
        job, created = await run_in_threadpool(service.submit, name, path, fmt, owner_of(principal), key, fingerprint)
    headers = {"location": f"/jobs/{job.id}"}
    if not created:
        headers["idempotent-replayed"] = "true"
    return _json(describe(job, time.time()), 202, headers)


async def _spool(request: Request, path: Path) -> tuple[formats_in.InputFormat, str]:
    """Write the upload to ``path``; returns its format and SHA-256."""
    digest = hashlib.sha256()
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("multipart upload: expected the batch as a file field named 'file'")
        fmt = formats_in.format_of(upload.content_type, upload.filename or "")
        with path.open("wb") as out:
            while block := await upload.read(1 << 20):
                digest.update(block)
                out.write(block)
        await form.close()
        return fmt, digest.hexdigest()
    fmt = formats_in.format_of(content_type)
    with path.open("wb") as out:
        async for block in request.stream():
            digest.update(block)
            out.write(block)
    return fmt, digest.hexdigest()


async def status(request: Request) -> Response:
    job = await run_in_threadpool(_service(request).visible, request.path_params["id"], current_principal(request))
    return _json(describe(job, time.time()))


async def cancel(request: Request) -> Response:
    job = await run_in_threadpool(_service(request).cancel, request.path_params["id"], current_principal(request))
    return _json(describe(job, time.time()))


async def result(request: Request) -> Response:
    job_id = request.path_params["id"]
    fmt = formats_out.negotiate(request.headers.get("accept"), request.query_params.get("format"))
    chunks = await run_in_threadpool(_service(request).result, job_id, current_principal(request), fmt)
    filename = f"job-{job_id}{_SUFFIX[fmt]}"
    headers = {"content-disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(chunks, media_type=formats_out.MEDIA[fmt], headers=headers)


async def job(request: Request) -> Response:
    return await (cancel(request) if request.method == "DELETE" else status(request))


def routes() -> list[Route]:
    return [
        Route("/models/{name}/jobs", submit, methods=["POST"]),
        Route("/jobs/{id}", job, methods=["GET", "DELETE"]),  # one route, so a 405 lists both in Allow
        Route("/jobs/{id}/result", result, methods=["GET"]),
    ]
