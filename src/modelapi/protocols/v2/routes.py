"""Open Inference Protocol (KServe V2 / Triton HTTP) routes: health, metadata and inference under ``/v2``.

Handlers are thin: read the body, decode it with ``codec.py``, call the data plane, encode the answer.
Errors are raised as ``ModelAPIError`` subclasses; the routes carry ``errors.V2_ERRORS``, so
``http/errors.py`` renders them as ``{"error": ...}``. The repository extension (``repository.py``) is
added only with management routes on; the statistics extension's numbers come from ``stats.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import jsonutil, tracing
from ...errors import MalformedRequest, ModelNotFound
from ...http.request import header, require_json
from ...http.responses import OctetBytes, json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol
from . import codec, openapi, repository, stats
from .binary import HEADER_LENGTH
from .errors import V2_ERRORS

_SERVER_METADATA = jsonutil.dumps(codec.server_metadata())
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode("latin-1")  # as ASGI has header names


def route(path: str, endpoint: object, methods: list[str], **kwargs: object) -> ProtocolRoute:
    """A route of this protocol: its errors in the protocol's style."""
    return ProtocolRoute(path, endpoint, methods=methods, error_style=V2_ERRORS, **kwargs)  # type: ignore[arg-type]


def _header_length(request: Request) -> int | None:
    value = header(request, _HEADER_LENGTH_KEY)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise MalformedRequest(f"{HEADER_LENGTH}: must be a non-negative integer, got '{value[:40]}'")
    return int(value)


def routes(services: Services) -> list[BaseRoute]:
    dp = services.dataplane

    async def server_metadata(request: Request) -> Response:
        return json_response(_SERVER_METADATA)

    async def live(request: Request) -> Response:
        alive = dp.live
        return json_response({"live": alive}, 200 if alive else 503)

    async def ready(request: Request) -> Response:
        ok = dp.ready
        return json_response({"ready": ok}, 200 if ok else 503)

    async def model_metadata(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        handle = dp.resolve(name, services.context(request, "v2"), version)
        metadata = codec.codec_for(handle.model).metadata_json
        if version is None:  # the model's metadata lists every version it serves
            served = dp.repository.entry(name).ready_versions()
            if served != [handle.version]:
                return json_response({**jsonutil.loads(metadata), "versions": served})
        return json_response(metadata)

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        entry = dp.repository.entry(name, services.context(request, "v2").principal)
        if version is not None and version not in entry.versions():
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'; its versions: {', '.join(entry.versions())}"
            )
        ok = dp.live and (entry.ready if version is None else version in entry.serving)
        return json_response({"name": name, "ready": ok}, 200 if ok else 503)

    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        ctx = services.context(request, "v2")
        header_length = _header_length(request)
        if header_length is None:
            require_json(request)  # with the binary extension any content type goes (tritonclient: octet-stream)
        # admitted on the head (a refusal reads no body); the version is held once the body is in
        with dp.admit(name, ctx, version) as admission:
            # parsed before the call holds a version: a body that is not JSON names none, as on the other protocols
            doc, reader = codec.parse(await services.body(request), header_length, ctx.json)
            with admission.call() as call:
                model_codec = codec.codec_for(call.model)
                with tracing.span("decode"):
                    inference_request, fmt = model_codec.decode_parsed(doc, reader)
                answer = await call.infer(inference_request)
        with tracing.span("encode"):
            payload, json_length = model_codec.encode(answer, fmt)
        if json_length is None:
            return json_response(payload)  # the headers Response(payload, media_type="application/json") makes
        # the headers Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: ...}) makes
        return OctetBytes(payload, ((_HEADER_LENGTH_KEY, b"%d" % json_length),))

    async def statistics(request: Request) -> Response:
        name, version = request.path_params.get("name"), request.path_params.get("version")
        principal = services.context(request, "v2").principal
        return json_response(stats.statistics(dp.repository, principal, name, version))

    get, post = ["GET"], ["POST"]
    return [
        route("/v2", server_metadata, get),
        route("/v2/health/live", live, get),
        route("/v2/health/ready", ready, get),
        *(repository.routes(services, route) if services.settings.management_routes else []),
        route("/v2/models/stats", statistics, get),  # before /v2/models/{name}, as in Triton
        route("/v2/models/{name}/stats", statistics, get),
        route("/v2/models/{name}/versions/{version}/stats", statistics, get),
        route("/v2/models/{name}", model_metadata, get),
        route("/v2/models/{name}/versions/{version}", model_metadata, get),
        route("/v2/models/{name}/ready", model_ready, get),
        route("/v2/models/{name}/versions/{version}/ready", model_ready, get),
        route("/v2/models/{name}/infer", infer, post, inference=True),
        route("/v2/models/{name}/versions/{version}/infer", infer, post, inference=True),
    ]


PROTOCOL = Protocol(
    "v2",
    routes,
    error_style=V2_ERRORS,
    prefixes=("/v2",),
    global_ops=openapi.GLOBAL,
    per_model_ops=openapi.PER_MODEL,
)
