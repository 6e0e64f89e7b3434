"""OpenAPI descriptions of the Open Inference Protocol (V2) routes (``routes.py``, ``repository.py``), keyed
by path template.

``http/openapi.py`` documents a V2 route only when the app serves it; a served V2 path missing here is still
listed, with a ``default`` response. Keep this table in step with the routes. The answers
authentication adds (401, 403, 429) come from ``openapi_security.py``, only when authentication is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...http import openapi_schemas as s

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...http.openapi import Builder
    from ...models.base import Model

    Ops = Callable[[Builder, Model | None], dict[str, dict[str, Any]]]

_V2_ERRORS = {
    400: "the request does not match the model's signature, or is not valid JSON",
    408: "the body did not arrive within the body-read timeout (docs/security.md#limits)",
    413: "the body is over the byte limit, or has too many rows or JSON elements",
    415: "the content type is not supported",
    500: "the model failed; the body carries only a request id",
    503: "the model is not ready yet, or has too many requests in flight (see Retry-After)",
    504: "the inference took longer than the inference timeout",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": _V2_ERRORS[c], "content": {"application/json": {"schema": s.ref("V2Error")}}}
        for c in codes
    }


def _flag(key: str, *extra: str) -> dict[str, Any]:

    props = {k: {"type": "string"} for k in extra}
    return {"type": "object", "required": [*extra, key], "properties": {**props, key: {"type": "boolean"}}}


def _status(summary: str, schema: dict[str, Any], yes: str, no: str) -> dict[str, dict[str, Any]]:
    content = {"application/json": {"schema": schema}}

    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": yes, "content": content},
                "503": {"description": no, "content": content},
            },
        }
    }


def _server(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:

    return {
        "get": {
            "summary": "Server metadata (Open Inference Protocol)",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": s.ref("V2ServerMetadata")}}}
            },
        }
    }


def _live(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    return _status(
        "Liveness (Open Inference Protocol)", _flag("live"), "the server is live", "the server is shutting down"
    )


def _ready(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    return _status(
        "Readiness (Open Inference Protocol)", _flag("ready"), "every model is ready", "not every model is ready"
    )


def _model_metadata(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    assert model is not None

    return {
        "get": {
            "summary": f"Metadata of '{model.name}' (Open Inference Protocol)",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": s.ref("V2ModelMetadata")}}}
            },
        }
    }


def _model_ready(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    assert model is not None

    return _status(
        f"Readiness of '{model.name}' (Open Inference Protocol)",
        _flag("ready", "name"),
        "the model is ready",
        "the model is not ready yet",
    )


def _repository(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    item = {
        "type": "object",
        "required": ["name", "version", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"enum": ["READY", "UNAVAILABLE"]},
        },
    }

    return {
        "post": {
            "summary": "Every served model with its state (Triton repository index)",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "array", "items": item}}},
                }
            },
        }
    }


def _infer(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:

    assert model is not None
    return {
        "post": {
            "summary": f"Infer with '{model.name}' (Open Inference Protocol)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": s.ref(f"{b.keys[model.name]}.V2InferRequest"),
                        "examples": {"one row": {"value": s.v2_example(model.signature)}},
                    }
                },
            },
            "description": "Also takes the binary tensor extension (Inference-Header-Content-Length), as Triton does; "
            "an answer with binary outputs is application/octet-stream.",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": s.ref("V2InferResponse")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                **_errors(400, 408, 413, 415, 500, 503, 504),
            },
        }
    }


_DURATION = {
    "type": "object",
    "required": ["count", "ns"],
    "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}},
}
_STATS = {
    "type": "object",
    "required": ["model_stats"],
    "properties": {
        "model_stats": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "last_inference", "inference_count", "execution_count"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "last_inference": {"type": "integer", "description": "milliseconds since the epoch"},
                    "inference_count": {"type": "integer", "description": "rows inferred"},
                    "execution_count": {"type": "integer", "description": "batches run"},
                    "inference_stats": {
                        "type": "object",
                        "properties": {
                            k: _DURATION
                            for k in (
                                "success",
                                "fail",
                                "queue",
                                "compute_input",
                                "compute_infer",
                                "compute_output",
                                "cache_hit",
                                "cache_miss",
                            )
                        },
                    },
                    "batch_stats": {"type": "array", "items": {"type": "object"}},
                    "memory_usage": {"type": "array", "items": {"type": "object"}},
                },
            },
        }
    },
}


def _statistics(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    whose = "every model" if model is None else f"'{model.name}'"
    return {
        "get": {
            "summary": f"Statistics of {whose} (Triton statistics extension), totals of every worker",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": _STATS}}},
            },
        }
    }


GLOBAL: dict[str, Ops] = {
    "/v2": _server,
    "/v2/health/live": _live,
    "/v2/health/ready": _ready,
    "/v2/repository/index": _repository,
    "/v2/models/stats": _statistics,
}
PER_MODEL: dict[str, Ops] = {
    "/v2/models/{}": _model_metadata,
    "/v2/models/{}/ready": _model_ready,
    "/v2/models/{}/infer": _infer,
    "/v2/models/{}/stats": _statistics,
    "/v2/models/{}/versions/{}/stats": _statistics,
    "/v2/models/{}/versions/{}": _model_metadata,
    "/v2/models/{}/versions/{}/ready": _model_ready,
    "/v2/models/{}/versions/{}/infer": _infer,
}
