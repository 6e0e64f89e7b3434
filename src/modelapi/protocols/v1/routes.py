"""KServe V1 / TensorFlow Serving routes: model status and ``:predict`` with instances or columnar inputs.

GET   /v1/models/{name}[/versions/{v}]                        model status, every version with its state
POST  /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    predict

Answers name the version that produced them in a ``Model-Version`` header.
"""

from __future__ import annotations

from starlette.convertors import CONVERTOR_TYPES, StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import tracing
from ...errors import ModelNotFound, ModelNotReady
from ...http.request import require_json
from ...http.responses import json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol
from . import codec, openapi


class ModelNameConvertor(StringConvertor):
    """A path segment without ``:``, so ``/v1/models/{name}`` and ``/v1/models/{name}:predict`` never overlap."""

    regex = "[^/:]+"


if "modelname" not in CONVERTOR_TYPES:
    register_url_convertor("modelname", ModelNameConvertor())


def routes(services: Services) -> list[BaseRoute]:
    dp = services.dataplane

    async def v1_status(request: Request) -> Response:
        """TF Serving's model status: every version with its state."""
        name, version = request.path_params["name"], request.path_params.get("version")
        entry = dp.repository.entry(name, services.context(request, "v1").principal)
        if version is not None:
            state, _reason = entry.state_of(version) if version in entry.versions() else (None, None)
            if state is None:
                raise ModelNotFound(
                    f"model '{name}' has no version '{version}'; its versions: {', '.join(entry.versions())}"
                )
        if not (entry.serving if version is None else version in entry.serving):
            raise ModelNotReady(f"model '{name}' is not ready yet")
        versions = [version] if version is not None else entry.versions()
        status = []
        for v in versions:
            state, reason = entry.state_of(v)
            status.append(
                {
                    "version": v,
                    "state": "AVAILABLE" if state.value == "READY" else state.value,
                    **({"reason": reason} if reason else {}),
                }
            )
        return json_response({"name": name, "ready": True, "model_version_status": status})

    async def v1_predict(request: Request) -> Response:
        params = request.path_params
        require_json(request)
        ctx = services.context(request, "v1")
        # admitted on the head (a refusal reads no body); the version is held once the body is in
        with dp.admit(params["name"], ctx, params.get("version"), params.get("label")) as admission:
            body = await services.json(request, typed=True)
            with admission.call() as call:
                signature = call.signature
                with tracing.span("decode"):
                    decoded = codec.decode(body, signature, max_rows=services.max_rows(call))
                answer = await call.infer(decoded.request)
        with tracing.span("encode"):
            return json_response(codec.encode(answer, signature, decoded), version=answer.model_version)

    get, post = ["GET"], ["POST"]
    return [
        ProtocolRoute("/v1/models/{name:modelname}", v1_status, methods=get, name="v1_status"),
        ProtocolRoute(
            "/v1/models/{name}/versions/{version:modelname}", v1_status, methods=get, name="v1_version_status"
        ),
        ProtocolRoute(
            "/v1/models/{name:modelname}:predict", v1_predict, methods=post, name="v1_predict", inference=True
        ),
        ProtocolRoute(
            "/v1/models/{name}/versions/{version:modelname}:predict",
            v1_predict,
            methods=post,
            name="v1_predict_version",
            inference=True,
        ),
        ProtocolRoute(
            "/v1/models/{name}/labels/{label:modelname}:predict",
            v1_predict,
            methods=post,
            name="v1_predict_label",
            inference=True,
        ),
    ]


PROTOCOL = Protocol("v1", routes, prefixes=(), per_model_ops=openapi.PER_MODEL)
