"""Open Inference Protocol (KServe V2 / Triton HTTP) routes: health, metadata and inference under ``/v2``.

Handlers are thin: read the body, decode it with ``codecs.v2``, call the data plane, encode the answer.
Errors are raised as ``ModelAPIError`` subclasses; ``http/errors.py`` renders them as ``{"error": ...}``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import jsonutil
from ..codecs import v2
from ..codecs.v2_binary import HEADER_LENGTH
from ..dataplane import DataPlane
from ..errors import MalformedRequest, ModelNotFound
from .request import call_context, read_body, require_json

_SERVER_METADATA = jsonutil.dumps(v2.server_metadata())


def _json(obj: Any, status: int = 200) -> Response:
    return Response(obj if isinstance(obj, bytes) else jsonutil.dumps(obj), status, media_type="application/json")


def _dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def _model_ref(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["name"], params.get("version")


async def server_metadata(request: Request) -> Response:
    return _json(_SERVER_METADATA)


async def live(request: Request) -> Response:
    alive = _dataplane(request).live
    return _json({"live": alive}, 200 if alive else 503)


async def ready(request: Request) -> Response:
    ok = _dataplane(request).ready
    return _json({"ready": ok}, 200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    name, version = _model_ref(request)
    dp = _dataplane(request)
    handle = dp.resolve(name, call_context(request, "v2"), version)
    metadata = v2.codec_for(handle.model).metadata_json
    if version is None:  # the model's metadata lists every version it serves
        served = dp.repository.entry(name).ready_versions()
        if served != [handle.version]:
            return _json({**jsonutil.loads(metadata), "versions": served})
    return _json(metadata)


async def model_ready(request: Request) -> Response:
    name, version = _model_ref(request)
    dp = _dataplane(request)
    entry = dp.repository.entry(name, call_context(request, "v2").principal)
    if version is not None and version not in entry.versions():
        raise ModelNotFound(f"model '{name}' has no version '{version}'; its versions: {', '.join(entry.versions())}")
    ok = dp.live and (entry.ready if version is None else version in entry.serving)
    return _json({"name": name, "ready": ok}, 200 if ok else 503)


async def repository_index(request: Request) -> Response:
    """Triton's repository index (``POST /v2/repository/index``): every model version with its state and reason;
    ``{"ready": true}`` in the body lists only the ready ones."""
    body = await read_body(request)
    ready_only = False
    if body.strip():
        doc = jsonutil.loads(body)
        if not isinstance(doc, dict):
            raise MalformedRequest('the request body must be a JSON object, e.g. {"ready": true}')
        ready_only = doc.get("ready") is True
    dp = _dataplane(request)
    visible = set(dp.names(call_context(request, "v2")))
    rows = [r for r in dp.repository.index() if r["name"] in visible and (not ready_only or r["state"] == "READY")]
    return _json(rows)


async def repository_load(request: Request) -> Response:
    """Triton's ``POST /v2/repository/models/{name}/load``: load the model from the repository, or load it again
    (every worker follows); 400 with the reason when no version could be loaded."""
    name = request.path_params["name"]
    _management_parameters(await read_body(request), allowed=())
    await _dataplane(request).repository.load_model(name)
    return Response(status_code=200)


async def repository_unload(request: Request) -> Response:
    """Triton's ``POST /v2/repository/models/{name}/unload``: stop serving the model (in-flight calls finish)."""
    name = request.path_params["name"]
    _management_parameters(await read_body(request), allowed=("unload_dependents",))
    await _dataplane(request).repository.unload_model(name)
    return Response(status_code=200)


def _management_parameters(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's ``parameters``; a parameter that would make the server read a path it names (Triton's
    ``file:`` and ``config`` overrides) is refused: models come from the repository only."""
    if not body.strip():
        return {}
    doc = jsonutil.loads(body)
    if not isinstance(doc, dict):
        raise MalformedRequest('the request body must be a JSON object, e.g. {"parameters": {}}')
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise MalformedRequest("parameters: must be a JSON object")
    for key in params:
        if key not in allowed:
            why = (
                "models load from the repository only; put the files in the repository and load by name"
                if key.startswith("file:") or key == "config"
                else f"supported: {', '.join(allowed) or 'none'}"
            )
            raise MalformedRequest(f"parameters.{key}: not supported; {why}")
    return params


async def infer(request: Request) -> Response:
    name, version = _model_ref(request)
    dataplane = _dataplane(request)
    with dataplane.call(name, call_context(request, "v2"), version) as call:
        codec = v2.codec_for(call.model)
        header_length = _header_length(request)
        if header_length is None:
            require_json(request)  # with the binary extension any content type goes (tritonclient: octet-stream)
        body = await read_body(request)
        inference_request, fmt = codec.decode(body, header_length)
        answer = await call.infer(inference_request)
    payload, json_length = codec.encode(answer, fmt)
    if json_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise MalformedRequest(f"{HEADER_LENGTH}: must be a non-negative integer, got '{value[:40]}'")
    return int(value)


def routes() -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/v2", server_metadata, methods=get),
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", ready, methods=get),
        Route("/v2/repository/index", repository_index, methods=post),
        Route("/v2/repository/models/{name}/load", repository_load, methods=post),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=post),
        Route("/v2/models/{name}", model_metadata, methods=get),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{name}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/infer", infer, methods=post),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=post),
    ]
