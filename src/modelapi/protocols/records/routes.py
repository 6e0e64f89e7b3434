"""The friendly JSON API, model listing and the index: thin handlers around the records codec.

GET       /                           index: name, version, models, links
GET       /models                     every model with its signature and URLs
GET       /models/{name}              one model's metadata and an example request body
GET|POST  /models/{name}/predict      records (POST) or one row from the query string (GET)
GET|POST  /models/{name}/versions/{v}/predict, /models/{name}/labels/{label}/predict   one version
GET|POST  /predict                    the same, for the only model served (404 when several are)

Answers name the version that produced them in a ``Model-Version`` header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import tracing
from ...errors import RouteNotFound
from ...http.request import require_json
from ...http.responses import json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol
from ..common import package_version
from . import codec, openapi, query


def model_urls(name: str) -> dict[str, str]:
    name = quote(name, safe="")
    return {
        "metadata": f"/models/{name}",
        "predict": f"/models/{name}/predict",
        "v1_predict": f"/v1/models/{name}:predict",
        "v2_metadata": f"/v2/models/{name}",
        "v2_infer": f"/v2/models/{name}/infer",
        "playground": f"/models/{name}/playground",
    }


def model_summary(services: Services, name: str) -> dict[str, Any]:
    """A model as ``/models`` shows it: its default version's description, every version's state, labels."""
    entry = services.repository.entry(name)
    default = entry.default_version
    described: dict[str, Any] = (
        entry.serving[default].describe() if default is not None else {"name": name, "version": None}
    )
    versions = []
    for version in entry.versions():
        state, reason = entry.state_of(version)
        versions.append({"version": version, "state": state.value, **({"reason": reason} if reason else {})})
    return {
        **described,
        "ready": services.dataplane.live and entry.ready,
        "default_version": default,
        "versions": versions,
        **({"labels": dict(entry.labels)} if entry.labels else {}),
        **({"canary_percent": entry.canary_percent} if entry.canary_percent else {}),
        **({"error": entry.error} if entry.error else {}),
        "urls": model_urls(name),
    }


def _ref(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    return params["name"], params.get("version"), params.get("label")


def routes(services: Services) -> list[BaseRoute]:
    dp = services.dataplane

    async def index(request: Request) -> Response:
        names = dp.names(services.context(request, "records"))
        only = dp.repository.only_model
        return json_response(
            {
                "name": "modelapi",
                "version": package_version(),
                "models": names,
                "links": {
                    "docs": "/docs",
                    "openapi": "/openapi.json",
                    "models": "/models",
                    **({"predict": "/predict"} if only is not None and only in names else {}),
                    # a page per model to try it in a browser (protocols/playground)
                    "playgrounds": {n: model_urls(n)["playground"] for n in names},
                },
            }
        )

    async def list_models(request: Request) -> Response:
        names = dp.names(services.context(request, "records"))  # a key limited to some models sees only those
        return json_response({"models": [model_summary(services, n) for n in names]})

    async def model_metadata(request: Request) -> Response:
        name, version, label = _ref(request)
        ctx = services.context(request, "records")
        dp.repository.entry(name, ctx.principal)  # 404 first, for a name the key may not use
        summary = model_summary(services, name)
        if version is None and label is None and summary["default_version"] is None:
            return json_response({**summary, "example": None})
        handle = dp.resolve(name, ctx, version, label)
        signature = handle.signature
        example = signature.example_record()
        query_example = query.example_query(signature) if not any(s.row_shape for s in signature.inputs) else None
        return json_response(
            {**summary, **handle.describe(), "example": {"request": example, "query": query_example}},
            version=handle.version,
        )

    async def predict(request: Request) -> Response:
        name, version, label = _ref(request)
        return await _predict(request, name, version, label)

    async def predict_default(request: Request) -> Response:
        only = dp.repository.only_model
        if only is None:
            names = dp.names(services.context(request, "records"))
            raise RouteNotFound(
                f"/predict needs exactly one served model, and this server serves {len(names)}: "
                f"{', '.join(names)}; use /models/{{name}}/predict"
                + (f", e.g. /models/{quote(names[0], safe='')}/predict" if names else "")
            )
        return await _predict(request, only, None, None)

    async def _predict(request: Request, name: str, version: str | None, label: str | None) -> Response:
        get = request.method in ("GET", "HEAD")
        if not get:
            require_json(request)
        # admitted on the head (a refusal reads no body); the version is held once the body is in
        with dp.admit(name, services.context(request, "records"), version, label) as admission:
            body = None if get else await services.json(request, typed=True)
            with admission.call() as call:
                signature = call.signature
                with tracing.span("decode"):
                    if get:
                        inference = query.decode_query(request.query_params.multi_items(), signature)
                        single = True
                    else:
                        inference, single = codec.decode(body, signature, max_rows=services.max_rows(call))
                answer = await call.infer(inference)
        with tracing.span("encode"):
            return json_response(codec.encode_json(answer, signature, single=single), version=answer.model_version)

    get, both = ["GET"], ["GET", "POST"]
    return [
        ProtocolRoute("/", index, methods=get, name="index"),
        ProtocolRoute("/models", list_models, methods=get, name="models"),
        ProtocolRoute("/models/{name}", model_metadata, methods=get, name="model_metadata"),
        ProtocolRoute("/models/{name}/versions/{version}", model_metadata, methods=get, name="model_version_metadata"),
        ProtocolRoute("/models/{name}/predict", predict, methods=both, name="predict", inference=True),
        ProtocolRoute(
            "/models/{name}/versions/{version}/predict", predict, methods=both, name="predict_version", inference=True
        ),
        ProtocolRoute(
            "/models/{name}/labels/{label}/predict", predict, methods=both, name="predict_label", inference=True
        ),
        ProtocolRoute(
            "/predict", predict_default, methods=both, name="predict_default", inference=True, only_model=True
        ),
    ]


PROTOCOL = Protocol("records", routes, global_ops=openapi.GLOBAL, per_model_ops=openapi.PER_MODEL)
