"""OpenAPI descriptions of the friendly JSON API and KServe V1 routes (``routes_rest.py``), and of the document
and docs routes, keyed by path template.

``openapi.py`` documents a route only when the app serves it. The answers authentication adds (401, 403, and
429 from the per-key rate limit) are added by ``openapi_security.py``, only when authentication is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import openapi_schemas as s

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..models.base import Model
    from .openapi import Builder

    Ops = Callable[[Builder, Model | None], dict[str, dict[str, Any]]]

Op = dict[str, Any]
_STATUS_TEXT = {
    400: "the request does not match the model's signature, or is not valid JSON",
    408: "the body did not arrive within the body-read timeout (docs/security.md#limits)",
    413: "the body is over the byte limit, or has too many rows or JSON elements",
    415: "the content type is not JSON",
    500: "the model failed; the body carries only a request id",
    503: "the model is not ready yet, or has too many requests in flight (see Retry-After)",
    504: "the inference took longer than the inference timeout",
}


def errors(*codes: int) -> dict[str, Any]:
    """Error answers in this API's style: application/problem+json."""
    content = {"application/problem+json": {"schema": s.ref("Problem")}}
    return {str(c): {"description": _STATUS_TEXT[c], "content": content} for c in codes}


def ok(schema: s.Schema, description: str = "OK", media: str = "application/json") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def _index(b: Builder, model: Model | None) -> dict[str, Op]:
    return {"get": {"summary": "Server index: name, version, models and links", "responses": ok(s.ref("Index"))}}


def _models(b: Builder, model: Model | None) -> dict[str, Op]:
    return {"get": {"summary": "Every served model with its signature and URLs", "responses": ok(s.ref("ModelList"))}}


def _metadata(b: Builder, model: Model | None) -> dict[str, Op]:
    assert model is not None
    return {
        "get": {
            "summary": f"Metadata of '{model.name}' with an example request",
            "responses": ok(s.ref("ModelMetadata")),
        }
    }


def _predict(b: Builder, model: Model | None) -> dict[str, Op]:
    assert model is not None
    key, sig = b.keys[model.name], model.signature
    rec = sig.example_record()
    answers = {"anyOf": [s.ref(f"{key}.Answer"), s.ref(f"{key}.Answers")]}
    many: s.Schema = {"type": "array", "minItems": 1, "items": s.ref(f"{key}.Record")}
    if b.dp.max_rows:
        many["maxItems"] = b.dp.max_rows
    post = {
        "summary": f"Predict with '{model.name}': one record, or a list of records",
        "description": 'One record answers one object; a list answers {"predictions": [...]}.',
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [s.ref(f"{key}.Record"), many]},
                    "examples": {"one record": {"value": rec}, "several records": {"value": [rec, rec]}},
                }
            },
        },
        "responses": {**ok(answers, "the prediction"), **errors(400, 408, 413, 415, 500, 503, 504)},
    }
    if any(spec.row_shape for spec in sig.inputs):
        get: Op = {
            "summary": "Not available for this model",
            "description": "GET takes only scalar features; this model has array inputs: POST instead.",
            "responses": errors(400),
        }
    else:
        get = {
            "summary": f"Predict one row with '{model.name}' from the query string",
            "parameters": [
                {
                    "name": spec.name,
                    "in": "query",
                    "required": True,
                    "schema": s.row(spec),
                    "example": spec.example_value(),
                }
                for spec in sig.inputs
            ],
            "responses": {**ok(s.ref(f"{key}.Answer"), "the prediction"), **errors(400, 500, 503, 504)},
        }
    return {"get": get, "post": post}


def _v1_status(b: Builder, model: Model | None) -> dict[str, Op]:
    assert model is not None
    return {
        "get": {"summary": f"KServe V1 status of '{model.name}'", "responses": {**ok(s.ref("V1Status")), **errors(503)}}
    }


def _v1_predict(b: Builder, model: Model | None) -> dict[str, Op]:
    assert model is not None
    key = b.keys[model.name]
    rec = model.signature.example_record()
    examples: dict[str, Any] = {"instances (objects)": {"value": {"instances": [rec]}}}
    if all(not spec.row_shape for spec in model.signature.inputs):
        examples["instances (feature lists)"] = {"value": {"instances": [list(rec.values())]}}
    return {
        "post": {
            "summary": f"KServe V1 / TensorFlow Serving predict with '{model.name}'",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": s.ref(f"{key}.V1Request"), "examples": examples}},
            },
            "responses": {**ok(s.ref(f"{key}.V1Response")), **errors(400, 408, 413, 415, 500, 503, 504)},
        }
    }


def _openapi(b: Builder, model: Model | None) -> dict[str, Op]:
    return {"get": {"summary": "This document (OpenAPI 3.1)", "responses": ok({"type": "object"})}}


def _docs(b: Builder, model: Model | None) -> dict[str, Op]:
    return {
        "get": {
            "summary": "Interactive documentation (Swagger UI)",
            "responses": ok({"type": "string"}, "an HTML page", "text/html"),
        }
    }


GLOBAL: dict[str, Ops] = {
    "/": _index,
    "/models": _models,
    "/predict": _predict,
    "/openapi.json": _openapi,
    "/docs": _docs,
}
PER_MODEL: dict[str, Ops] = {
    "/models/{}": _metadata,
    "/models/{}/predict": _predict,
    "/v1/models/{}": _v1_status,
    "/v1/models/{}:predict": _v1_predict,
    # one path per loaded version and per label (openapi.Builder fills them in)
    "/models/{}/versions/{}": _metadata,
    "/models/{}/versions/{}/predict": _predict,
    "/models/{}/labels/{}/predict": _predict,
    "/v1/models/{}/versions/{}": _v1_status,
    "/v1/models/{}/versions/{}:predict": _v1_predict,
    "/v1/models/{}/labels/{}:predict": _v1_predict,
}
