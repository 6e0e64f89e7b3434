"""JSON Schemas for the two KServe objects modelapi generates, written from KServe's documented fields.

No pip package ships KServe's CRD schemas (the ``kserve`` SDK has model classes, not the CRDs' OpenAPI), so
these are ours: the fields of ``ClusterServingRuntime`` (serving.kserve.io/v1alpha1) and ``InferenceService``
(serving.kserve.io/v1beta1) that KServe documents, every object closed (``additionalProperties: false``) so a
misspelt field fails, and every embedded Kubernetes type (Container, Volume, EnvVar, ResourceRequirements,
ObjectMeta) checked against the Kubernetes schema that kubernetes-validate bundles.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import referencing

K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"


def _k8s(name: str) -> dict[str, str]:
    return {"$ref": f"{K8S}{name}"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}

SUPPORTED_MODEL_FORMAT = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
}

PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]

SERVING_RUNTIME_SPEC = {
    "type": "object",
    "required": ["containers"],
    "additionalProperties": False,
    "properties": {
        "supportedModelFormats": _array(SUPPORTED_MODEL_FORMAT),
        "protocolVersions": _array({"enum": PROTOCOLS}),
        "multiModel": {"type": "boolean"},
        "disabled": {"type": "boolean"},
        "annotations": _STRINGS,
        "labels": _STRINGS,
        "containers": {**_array(_k8s("io.k8s.api.core.v1.Container")), "minItems": 1},
        "volumes": _array(_k8s("io.k8s.api.core.v1.Volume")),
        "nodeSelector": _STRINGS,
        "tolerations": _array(_k8s("io.k8s.api.core.v1.Toleration")),
        "affinity": _k8s("io.k8s.api.core.v1.Affinity"),
        "imagePullSecrets": _array(_k8s("io.k8s.api.core.v1.LocalObjectReference")),
        "replicas": {"type": "integer", "minimum": 0},
        "grpcEndpoint": {"type": "string"},
        "grpcDataEndpoint": {"type": "string"},
        "httpDataEndpoint": {"type": "string"},
    },
}

CLUSTER_SERVING_RUNTIME = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ClusterServingRuntime"},
        # cluster-scoped: no namespace
        "metadata": {
            "allOf": [_k8s("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), {"not": {"required": ["namespace"]}}]
        },
        "spec": SERVING_RUNTIME_SPEC,
    },
}

# the model spec: a format, a runtime, where the model is, and the container fields it may override
_CONTAINER_FIELDS = ("args", "command", "env", "envFrom", "resources", "securityContext", "volumeMounts")
MODEL_SPEC = {
    "type": "object",
    "required": ["modelFormat"],
    "additionalProperties": False,
    "properties": {
        "modelFormat": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1}, "version": {"type": "string"}},
        },
        "runtime": {"type": "string"},
        "runtimeVersion": {"type": "string"},
        "storageUri": {"type": "string", "pattern": "^[a-z0-9+.-]+://"},
        "protocolVersion": {"enum": PROTOCOLS},
        **{f: {"$ref": f"{K8S}io.k8s.api.core.v1.Container/properties/{f}"} for f in _CONTAINER_FIELDS},
    },
}

INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"allOf": [_k8s("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), {"required": ["name"]}]},
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["model"],
                    "properties": {
                        "model": MODEL_SPEC,
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "serviceAccountName": {"type": "string"},
                        "timeout": {"type": "integer"},
                        # the PodSpec's fields are inline in v1beta1's PredictorSpec (raw deployment mode only:
                        # Knative refuses this one)
                        "terminationGracePeriodSeconds": {
                            "$ref": f"{K8S}io.k8s.api.core.v1.PodSpec/properties/terminationGracePeriodSeconds"
                        },
                    },
                }
            },
        },
    },
}

SCHEMAS = {"ClusterServingRuntime": CLUSTER_SERVING_RUNTIME, "InferenceService": INFERENCE_SERVICE}


def _definitions(version: str) -> Any:
    path = f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json"
    return json.loads(resources.files("kubernetes_validate").joinpath(path).read_text())


def validate(document: dict[str, Any], version: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` is a valid KServe object of its kind."""
    definitions = referencing.Resource.from_contents(_definitions(version))
    registry: referencing.Registry[Any] = definitions @ referencing.Registry()
    jsonschema.Draft202012Validator(SCHEMAS[document["kind"]], registry=registry).validate(document)
