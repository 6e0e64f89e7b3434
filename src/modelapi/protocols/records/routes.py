"""The friendly JSON API, KServe V1 rows, model listing and the index: thin handlers around the codecs.

GET       /                           index: name, version, models, links
GET       /models                     every model with its signature and URLs
GET       /models/{name}              one model's metadata and an example request body
GET|POST  /models/{name}/predict      records (POST) or one row from the query string (GET)
GET|POST  /models/{name}/versions/{v}/predict, /models/{name}/labels/{label}/predict   one version
GET|POST  /predict                    the same, for the only model served (404 when several are)
GET       /v1/models/{name}[/versions/{v}]                 KServe V1 / TF Serving model status
POST      /v1/models/{name}[/versions/{v}|/labels/{l}]:predict   KServe V1 / TensorFlow Serving instances

Answers name the version that produced them in a ``Model-Version`` header.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any
from urllib.parse import quote

from starlette.convertors import CONVERTOR_TYPES, StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import jsonutil
from ..codecs import query, records, v1
from ..dataplane import DataPlane
from ..errors import ModelNotFound, ModelNotReady, RouteNotFound
from .request import call_context, read_json

#: the header naming the model version that produced an answer (V2 answers carry ``model_version`` instead)
VERSION_HEADER = "model-version"


class ModelNameConvertor(StringConvertor):
    """A path segment without ``:``, so ``/v1/models/{name}`` and ``/v1/models/{name}:predict`` never overlap."""

    regex = "[^/:]+"


if "modelname" not in CONVERTOR_TYPES:
    register_url_convertor("modelname", ModelNameConvertor())


@functools.cache  # the installed version cannot change while the process runs; GET / asks on every call
def package_version() -> str:
    try:
        return importlib.metadata.version("modelapi")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def dataplane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


def json_response(obj: Any, status: int = 200, version: str | None = None) -> Response:
    """JSON; ``version``: the model version that produced the answer, in the ``Model-Version`` header."""
    headers = None if version is None else {VERSION_HEADER: version}
    return Response(jsonutil.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def model_urls(name: str) -> dict[str, str]:
    name = quote(name, safe="")
    return {
        "metadata": f"/models/{name}",
        "predict": f"/models/{name}/predict",
        "v1_predict": f"/v1/models/{name}:predict",
        "v2_metadata": f"/v2/models/{name}",
        "v2_infer": f"/v2/models/{name}/infer",
    }


def model_summary(dp: DataPlane, name: str) -> dict[str, Any]:
    """A model as ``/models`` shows it: its default version's description, every version's state, labels."""
    entry = dp.repository.entry(name)
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
        "ready": dp.live and entry.ready,
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


# handlers --------------------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    dp = dataplane(request)
    names = dp.names(call_context(request, "records"))
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
            },
        }
    )


async def list_models(request: Request) -> Response:
    dp = dataplane(request)
    names = dp.names(call_context(request, "records"))  # a key limited to some models sees only those
    return json_response({"models": [model_summary(dp, n) for n in names]})


async def model_metadata(request: Request) -> Response:
    dp = dataplane(request)
    name, version, label = _ref(request)
    ctx = call_context(request, "records")
    dp.repository.entry(name, ctx.principal)  # 404 first, for a name the key may not use
    summary = model_summary(dp, name)
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
    dp = dataplane(request)
    only = dp.repository.only_model
    if only is None:
        names = dp.names(call_context(request, "records"))
        raise RouteNotFound(
            f"/predict needs exactly one served model, and this server serves {len(names)}: {', '.join(names)}; "
            f"use /models/{{name}}/predict" + (f", e.g. /models/{quote(names[0], safe='')}/predict" if names else "")
        )
    return await _predict(request, only, None, None)


async def _predict(request: Request, name: str, version: str | None, label: str | None) -> Response:
    dp = dataplane(request)
    with dp.call(name, call_context(request, "records"), version, label) as call:
        signature = call.signature
        if request.method in ("GET", "HEAD"):
            inference = query.decode_query(request.query_params.multi_items(), signature)
            single = True
        else:
            inference, single = records.decode(await read_json(request), signature, max_rows=dp.max_rows)
        answer = await call.infer(inference)
    return json_response(records.encode(answer, signature, single=single), version=answer.model_version)


async def v1_status(request: Request) -> Response:
    """TF Serving's model status: every version with its state."""
    dp = dataplane(request)
    name, version, _ = _ref(request)
    entry = dp.repository.entry(name, call_context(request, "v1").principal)
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
    dp = dataplane(request)
    name, version, label = _ref(request)
    with dp.call(name, call_context(request, "v1"), version, label) as call:
        signature = call.signature
        decoded = v1.decode(await read_json(request), signature, max_rows=dp.max_rows)
        answer = await call.infer(decoded.request)
    return json_response(v1.encode(answer, signature, decoded), version=answer.model_version)


def routes() -> list[BaseRoute]:
    get, both, post = ["GET"], ["GET", "POST"], ["POST"]
    return [
        Route("/", index, methods=get, name="index"),
        Route("/models", list_models, methods=get, name="models"),
        Route("/models/{name}", model_metadata, methods=get, name="model_metadata"),
        Route("/models/{name}/versions/{version}", model_metadata, methods=get, name="model_version_metadata"),
        Route("/models/{name}/predict", predict, methods=both, name="predict"),
        Route("/models/{name}/versions/{version}/predict", predict, methods=both, name="predict_version"),
        Route("/models/{name}/labels/{label}/predict", predict, methods=both, name="predict_label"),
        Route("/predict", predict_default, methods=both, name="predict_default"),
        Route("/v1/models/{name:modelname}", v1_status, methods=get, name="v1_status"),
        Route("/v1/models/{name}/versions/{version:modelname}", v1_status, methods=get, name="v1_version_status"),
        Route("/v1/models/{name:modelname}:predict", v1_predict, methods=post, name="v1_predict"),
        Route(
            "/v1/models/{name}/versions/{version:modelname}:predict",
            v1_predict,
            methods=post,
            name="v1_predict_version",
        ),
        Route("/v1/models/{name}/labels/{label:modelname}:predict", v1_predict, methods=post, name="v1_predict_label"),
    ]
