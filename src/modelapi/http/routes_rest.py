"""The friendly JSON API, KServe V1 rows, model listing and the index: thin handlers around the codecs.

GET       /                           index: name, version, models, links
GET       /models                     every model with its signature and URLs
GET       /models/{name}              one model's metadata and an example request body
GET|POST  /models/{name}/predict      records (POST) or one row from the query string (GET)
GET|POST  /predict                    the same, for the only model served (404 when several are)
GET       /v1/models/{name}           KServe V1 model status
POST      /v1/models/{name}:predict   KServe V1 / TensorFlow Serving instances
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
from ..errors import ModelNotReady, RouteNotFound
from ..models.base import Model
from ..security.principal import visible_models
from .request import read_json


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


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(jsonutil.dumps(obj), status_code=status, media_type="application/json")


def model_urls(model: Model) -> dict[str, str]:
    name = quote(model.name, safe="")
    return {
        "metadata": f"/models/{name}",
        "predict": f"/models/{name}/predict",
        "v1_predict": f"/v1/models/{name}:predict",
        "v2_metadata": f"/v2/models/{name}",
        "v2_infer": f"/v2/models/{name}/infer",
    }


def model_summary(dp: DataPlane, model: Model) -> dict[str, Any]:
    return {**model.describe(), "ready": dp.model_ready(model.name), "urls": model_urls(model)}


# handlers --------------------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    dp = dataplane(request)
    return json_response(
        {
            "name": "modelapi",
            "version": package_version(),
            "models": visible_models(request, dp.models),
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "models": "/models",
                **(
                    {"predict": "/predict"}
                    if dp.default_model is not None and visible_models(request, [dp.default_model.name])
                    else {}
                ),
            },
        }
    )


async def list_models(request: Request) -> Response:
    dp = dataplane(request)
    names = visible_models(request, dp.models)  # a key limited to some models sees only those
    return json_response({"models": [model_summary(dp, dp.models[n]) for n in names]})


async def model_metadata(request: Request) -> Response:
    dp = dataplane(request)
    model = dp.get(request.path_params["name"])
    example = model.signature.example_record()
    return json_response(
        {
            **model_summary(dp, model),
            "example": {
                "request": example,
                "query": query.example_query(model.signature)
                if not any(s.row_shape for s in model.signature.inputs)
                else None,
            },
        }
    )


async def predict(request: Request) -> Response:
    model = dataplane(request).get(request.path_params["name"])
    return await _predict(request, model)


async def predict_default(request: Request) -> Response:
    dp = dataplane(request)
    model = dp.default_model
    if model is None:
        names = list(dp.models)
        raise RouteNotFound(
            f"/predict needs exactly one served model, and this server serves {len(names)}: {', '.join(names)}; "
            f"use /models/{{name}}/predict" + (f", e.g. /models/{quote(names[0], safe='')}/predict" if names else "")
        )
    return await _predict(request, model)


async def _predict(request: Request, model: Model) -> Response:
    dp = dataplane(request)
    signature = model.signature
    if request.method in ("GET", "HEAD"):
        inference = query.decode_query(request.query_params.multi_items(), signature)
        single = True
    else:
        inference, single = records.decode(await read_json(request), signature, max_rows=dp.max_rows)
    answer = await dp.infer(model.name, inference)
    return json_response(records.encode(answer, signature, single=single))


async def v1_status(request: Request) -> Response:
    dp = dataplane(request)
    model = dp.get(request.path_params["name"])
    if not dp.model_ready(model.name):
        raise ModelNotReady(f"model '{model.name}' is not ready yet")
    return json_response({"name": model.name, "ready": True})


async def v1_predict(request: Request) -> Response:
    dp = dataplane(request)
    model = dp.get(request.path_params["name"])
    decoded = v1.decode(await read_json(request), model.signature, max_rows=dp.max_rows)
    answer = await dp.infer(model.name, decoded.request)
    return json_response(v1.encode(answer, model.signature, decoded))


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"], name="index"),
        Route("/models", list_models, methods=["GET"], name="models"),
        Route("/models/{name}", model_metadata, methods=["GET"], name="model_metadata"),
        Route("/models/{name}/predict", predict, methods=["GET", "POST"], name="predict"),
        Route("/predict", predict_default, methods=["GET", "POST"], name="predict_default"),
        Route("/v1/models/{name:modelname}", v1_status, methods=["GET"], name="v1_status"),
        Route("/v1/models/{name:modelname}:predict", v1_predict, methods=["POST"], name="v1_predict"),
    ]
