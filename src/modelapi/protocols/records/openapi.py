"""OpenAPI descriptions of the friendly JSON API routes (``routes.py``), keyed by path template, and the
problem+json error answers the other protocols in that style share.

``http/openapi.py`` documents a route only when the app serves it. The answers authentication adds (401, 403, and
429 from the per-key rate limit) are added by ``openapi_security.py``, only when authentication is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...http import openapi_schemas as s

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...http.openapi import Builder
    from ...models.base import Model

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


ok = s.ok


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


GLOBAL: dict[str, Ops] = {
    "/": _index,
    "/models": _models,
    "/predict": _predict,
}
PER_MODEL: dict[str, Ops] = {
    "/models/{}": _metadata,
    "/models/{}/predict": _predict,
    # one path per loaded version and per label (openapi.Builder fills them in)
    "/models/{}/versions/{}": _metadata,
    "/models/{}/versions/{}/predict": _predict,
    "/models/{}/labels/{}/predict": _predict,
}
