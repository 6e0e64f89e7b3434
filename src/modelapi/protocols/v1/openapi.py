"""OpenAPI descriptions of the KServe V1 routes (``routes.py``), keyed by path template; errors are
problem+json, described as the friendly API describes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...http import openapi_schemas as s
from ..records.openapi import errors, ok

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...http.openapi import Builder
    from ...models.base import Model

    Ops = Callable[[Builder, Model | None], dict[str, dict[str, Any]]]

Op = dict[str, Any]


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


PER_MODEL: dict[str, Ops] = {
    "/v1/models/{}": _v1_status,
    "/v1/models/{}:predict": _v1_predict,
    # one path per loaded version and per label (openapi.Builder fills them in)
    "/v1/models/{}/versions/{}": _v1_status,
    "/v1/models/{}/versions/{}:predict": _v1_predict,
    "/v1/models/{}/labels/{}:predict": _v1_predict,
}
