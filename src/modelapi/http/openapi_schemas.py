"""JSON Schemas (OpenAPI 3.1 dialect) derived from model signatures, and the shared error/metadata schemas.

Everything here describes what the codecs really accept and answer: the request schemas reject what the
codecs reject (unknown fields, wrong types, out-of-range integers), the answer schemas follow the friendly
mapping of ``protocols/records/codec.py`` (prediction, probabilities keyed by label, NaN as null).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..datatypes import DATATYPES, json_type
from ..protocols.common import primary_output
from ..protocols.records.codec import answer_keys
from ..signature import Signature, TensorSpec

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(schema: Schema, description: str = "OK", media: str = "application/json") -> dict[str, Any]:
    """A 200 answer with ``schema`` as ``media``."""
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def scalar(spec: TensorSpec, *, output: bool = False) -> Schema:
    kind = json_type(spec.datatype)
    if kind == "integer":
        if output:
            return {"type": "integer"}
        info = np.iinfo(spec.dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    if kind == "number" and (output or spec.allow_nonfinite):
        return {"type": ["number", "null"]}
    return {"type": kind}


def row(spec: TensorSpec, *, output: bool = False, keyed: bool = True) -> Schema:
    """One row of a tensor; labelled outputs as objects keyed by label when ``keyed``."""
    schema = scalar(spec, output=output)
    dims = list(spec.row_shape)
    if output and keyed and spec.labels is not None and dims and dims[-1] in (-1, len(spec.labels)):
        keys = [str(label.item() if isinstance(label, np.generic) else label) for label in spec.labels]
        schema = {
            "type": "object",
            "properties": dict.fromkeys(keys, schema),
            "required": keys,
            "additionalProperties": False,
        }
        dims = dims[:-1]
    for dim in reversed(dims):
        schema = {"type": "array", "items": schema, **({"minItems": dim, "maxItems": dim} if dim >= 0 else {})}
    example = {} if output else {"examples": [spec.example_value()]}
    return {**schema, "description": spec.description or spec.describe(), **example}


def record(signature: Signature) -> Schema:
    return {
        "type": "object",
        "properties": {s.name: row(s) for s in signature.inputs},
        "required": signature.input_names,
        "additionalProperties": False,
    }


def answer(signature: Signature) -> Schema:
    keys = answer_keys(signature)
    return {
        "type": "object",
        "properties": {keys[s.name]: row(s, output=True) for s in signature.outputs},
        "required": [keys[s.name] for s in signature.outputs],
        "additionalProperties": False,
    }


def v1_request(signature: Signature, max_rows: int | None, record_ref: str) -> Schema:
    forms: list[Schema] = [ref(record_ref)]
    if all(not s.row_shape for s in signature.inputs):
        n = len(signature.inputs)
        forms.append(
            {
                "type": "array",
                "prefixItems": [row(s) for s in signature.inputs],
                "items": False,
                "minItems": n,
                "maxItems": n,
                "description": "feature values in signature order",
            }
        )
    if len(signature.inputs) == 1:
        forms.append(row(signature.inputs[0]))
    limit = {"maxItems": max_rows} if max_rows else {}
    outputs = {"type": ["array", "null"], "minItems": 1, "items": {"enum": signature.output_names}}
    common = {"outputs": outputs, "signature_name": {"type": "string"}, "parameters": {"type": "object"}}
    columns: Schema = {
        "type": "object",
        "properties": {s.name: {"type": "array", "minItems": 1, **limit, "items": row(s)} for s in signature.inputs},
        "required": signature.input_names,
        "additionalProperties": False,
    }
    if len(signature.inputs) == 1:
        columns = {"anyOf": [columns, columns["properties"][signature.inputs[0].name]]}
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": {"type": "array", "minItems": 1, **limit, "items": {"anyOf": forms}},
                    **common,
                },
            },
            {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {"inputs": columns, **common},
            },
        ]
    }


def v1_response(signature: Signature) -> Schema:
    primary = primary_output(signature)
    spec = signature.output(primary) if primary is not None else None
    value = row(spec, output=True, keyed=False) if spec is not None else {}
    named = {"type": "object", "properties": {s.name: row(s, output=True, keyed=False) for s in signature.outputs}}
    return {
        "type": "object",
        "description": "predictions: one item per instance; outputs: the answer to a columnar request",
        "properties": {
            "predictions": {"type": "array", "items": {"anyOf": [value, named]}},
            "outputs": {"anyOf": [{"type": "array", "items": value}, {"type": "object"}]},
        },
    }


def v2_example(signature: Signature) -> Schema:
    tensors = []
    for spec in signature.inputs:
        value = spec.example_value()
        shape = [1, *np.shape(value)]
        tensors.append(
            {"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": np.asarray(value).ravel().tolist()}
        )
    return {"inputs": tensors}


def v2_request(signature: Signature) -> Schema:
    """The V2 infer request for one model: every input once, by name."""
    n = len(signature.inputs)
    tensor = {"allOf": [ref("V2RequestTensor"), {"properties": {"name": {"enum": signature.input_names}}}]}
    return {
        "allOf": [
            ref("V2InferRequest"),
            {
                "properties": {
                    "inputs": {"minItems": n, "maxItems": n, "items": tensor},
                    "outputs": {"items": {"properties": {"name": {"enum": signature.output_names}}}},
                }
            },
        ]
    }


_OBJECT_OR_NULL: Schema = {"type": ["object", "null"]}

_TENSOR_META: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}

#: schemas shared by every model
COMMON: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details (application/problem+json)",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": "string"},
            "field": {"type": "string", "description": "the input an Invalid Input (400) is about, when it is one"},
        },
    },
    "V2Error": {
        "type": "object",
        "description": "Open Inference Protocol error",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
    },
    "TensorMetadata": _TENSOR_META,
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "version", "platform", "inputs", "outputs", "ready", "urls"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
            "ready": {"type": "boolean"},
            "urls": {"type": "object", "additionalProperties": {"type": "string"}},
            "info": {"type": "object"},
            "example": {
                "type": "object",
                "properties": {"request": {"type": "object"}, "query": {"type": ["string", "null"]}},
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": ref("ModelMetadata")}},
    },
    "Index": {
        "type": "object",
        "required": ["name", "version", "models", "links"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "links": {
                "type": "object",
                "properties": {
                    "playgrounds": {
                        "type": "object",
                        "description": "each model's playground page, by model name",
                        "additionalProperties": {"type": "string"},
                    }
                },
                "additionalProperties": {"type": "string"},
            },
        },
    },
    "V1Status": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "V2RequestTensor": {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "shape": {"type": "array", "maxItems": 32, "items": {"type": "integer", "minimum": 0}},
            "datatype": {"enum": list(DATATYPES)},
            "parameters": _OBJECT_OR_NULL,
            "data": {"description": "the tensor's elements, flat or nested in row-major order"},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "parameters": {"type": ["object", "null"], "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "items": ref("V2RequestTensor")},
            "outputs": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1}, "parameters": _OBJECT_OR_NULL},
                },
            },
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {**_TENSOR_META["properties"], "parameters": {"type": "object"}, "data": {}},
                },
            },
        },
    },
    "V2ServerMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "V2ModelMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
        },
    },
}
