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
from ..errors import MalformedRequest
from ..security.principal import visible_models
from .request import read_body, require_json

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
    dataplane = _dataplane(request)
    ok = dataplane.ready and dataplane.live
    return _json({"ready": ok}, 200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    name, version = _model_ref(request)
    return _json(v2.codec_for(_dataplane(request).get(name, version)).metadata_json)


async def model_ready(request: Request) -> Response:
    name, version = _model_ref(request)
    ok = _dataplane(request).model_ready(name, version)
    return _json({"name": name, "ready": ok}, 200 if ok else 503)


async def repository_index(request: Request) -> Response:
    """Triton's model list (``POST /v2/repository/index``): every served model with its state."""
    dataplane = _dataplane(request)
    return _json(
        [
            {"name": m.name, "version": m.version, "state": "READY" if dataplane.model_ready(m.name) else "UNAVAILABLE"}
            for m in (dataplane.models[n] for n in visible_models(request, dataplane.models))
        ]
    )


async def infer(request: Request) -> Response:
    name, version = _model_ref(request)
    dataplane = _dataplane(request)
    codec = v2.codec_for(dataplane.get(name, version))
    header_length = _header_length(request)
    if header_length is None:
        require_json(request)  # with the binary extension any content type goes (tritonclient: octet-stream)
    body = await read_body(request)
    inference_request, fmt = codec.decode(body, header_length)
    answer = await dataplane.infer(name, inference_request, version)
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
        Route("/v2/models/{name}", model_metadata, methods=get),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{name}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/infer", infer, methods=post),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=post),
    ]
