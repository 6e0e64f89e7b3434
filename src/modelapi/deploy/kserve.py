"""KServe manifests: modelapi as a ClusterServingRuntime, and an InferenceService that uses it
(``modelapi deploy kserve``, docs/deployment.md).

KServe's storage initializer downloads ``storageUri`` into ``/mnt/models`` before the server starts; modelapi
serves whatever it finds there (a model file, an MLflow model, or a repository: repository/sources.py). The
runtime passes the InferenceService's name as ``--model-name`` (``{{.Name}}``, filled in by KServe), which
names a single model; a repository's models keep their directory names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .kubernetes import STATE_DIR, container_security, probes, secret_env, writable_volumes
from .manifest import Manifest

PORT = 8080  # KServe's convention for the predictor's HTTP port
OPS_PORT = 8082  # the operations port (--metrics-port): /metrics and the probes' health routes
#: seconds the pod's terminationGracePeriodSeconds exceeds the server's --graceful-timeout by (raw deployment mode)
DRAIN_MARGIN_S = 10
#: the terminationGracePeriodSeconds a pod gets when nothing sets it (Kubernetes' default), and the drain that
#: leaves the margin within it: the default, whatever mode the cluster deploys an InferenceService in
DEFAULT_GRACE_S = 30
DEFAULT_DRAIN_S = DEFAULT_GRACE_S - DRAIN_MARGIN_S
#: KServe's annotation choosing how an InferenceService is deployed, and its values for --deployment-mode
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODES = {"raw": "RawDeployment", "serverless": "Serverless"}
#: model formats modelapi loads, with the format versions an InferenceService may name
FORMATS: dict[str, tuple[str, ...]] = {
    "sklearn": ("1",),
    "onnx": ("1",),
    "xgboost": ("1", "2", "3"),
    "lightgbm": ("3", "4"),
    "mlflow": ("1", "2", "3"),
}


@dataclass(frozen=True)
class Options:
    name: str  # the InferenceService's name (and the model's, unless a repository names its models)
    image: str
    storage_uri: str
    runtime: str = "modelapi"
    namespace: str = "modelapi"
    model_format: str = "sklearn"
    protocol: str = "v2"
    cpu: str = "1"
    memory: str = "1Gi"
    grace_period_s: int = DEFAULT_DRAIN_S  # the server's --graceful-timeout
    deployment_mode: str | None = None  # a key of MODES; None: the cluster's default mode
    secret: str | None = None
    serve_args: tuple[str, ...] = ()

    @property
    def secret_name(self) -> str:
        return self.secret or f"{self.name}-urls"


def runtime(o: Options) -> Manifest:
    volumes, mounts = writable_volumes()
    args = [
        "serve",
        "/mnt/models",
        "--model-name",
        "{{.Name}}",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--metrics-port",
        str(OPS_PORT),
        # explicit, not the server's default: the InferenceService's grace period is sized from it
        "--graceful-timeout",
        str(o.grace_period_s),
        "--log-format",
        "json",
    ]
    container = {
        "name": "kserve-container",
        "image": o.image,
        "args": args,
        "env": [{"name": "MODELAPI_STATE_DIR", "value": STATE_DIR}],
        # one port: Knative (KServe's serverless mode) refuses a second one on the serving container, so the
        # probes name the operations port by number
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        # without a readiness probe of its own KServe gives the container a bare TCP probe, which passes as
        # soon as the port is bound, before the models are loaded. On the operations port, whose listener a
        # flood on the API port leaves alone: in raw deployment mode the kubelet probes it; in serverless mode
        # Knative's queue-proxy does (Knative 1.3 and later take a readiness port other than the container's)
        "readinessProbe": probes(OPS_PORT)["readinessProbe"],
        # Knative refuses startupProbe: liveness waits out the start instead. The live route answers while
        # models load, so only the interpreter's start has to fit in the delay. Knative points a liveness
        # probe at the container's port whatever it names; in raw deployment mode it stays on the operations port
        "livenessProbe": {**probes(OPS_PORT)["livenessProbe"], "initialDelaySeconds": 30},
        "resources": {
            "requests": {"cpu": o.cpu, "memory": o.memory},
            "limits": {"cpu": o.cpu, "memory": o.memory},
        },
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    body = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": o.runtime, "labels": {"app.kubernetes.io/name": "modelapi"}},
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(OPS_PORT), "prometheus.kserve.io/path": "/metrics"},
            "supportedModelFormats": [
                {"name": name, "version": version, "autoSelect": False}
                for name, versions in FORMATS.items()
                for version in versions
            ],
            "protocolVersions": ["v1", "v2"],
            "multiModel": False,
            "containers": [container],
            "volumes": volumes,
        },
    }
    comment = f"""modelapi as a KServe runtime for the {", ".join(FORMATS)} formats, over the V1 and V2 protocols.
The model comes from /mnt/models (KServe's storage initializer puts storageUri there); --model-name {{{{.Name}}}}
names a single model after the InferenceService. autoSelect is false: only an InferenceService that names
runtime: {o.runtime} uses it, so installing it changes nothing else in the cluster. Args an InferenceService
gives (e.g. --trust-pickle for a .joblib model) are appended to these; `modelapi deploy kserve` repeats
--graceful-timeout there, since each InferenceService's grace period is sized from its own."""
    return Manifest(body, comment)


def termination_grace_s(o: Options) -> int:
    return o.grace_period_s + DRAIN_MARGIN_S


def inference_service(o: Options) -> Manifest:
    model: dict[str, Any] = {
        "modelFormat": {"name": o.model_format},
        "runtime": o.runtime,
        "storageUri": o.storage_uri,
        "protocolVersion": o.protocol,
        "env": secret_env(o.secret_name),
        "resources": {
            "requests": {"cpu": o.cpu, "memory": o.memory},
            "limits": {"cpu": o.cpu, "memory": o.memory},
        },
    }
    # the drain again, after the runtime's: the ClusterServingRuntime is cluster-wide and may have been written
    # with another --graceful-timeout, while this InferenceService's grace period is sized from this one (KServe
    # appends these args to the runtime's; the last value given wins)
    model["args"] = ["--graceful-timeout", str(o.grace_period_s), *o.serve_args]
    predictor: dict[str, Any] = {"model": model}
    # The pod's grace period is set here, not in the ClusterServingRuntime: a ServingRuntime's spec takes
    # containers, volumes and scheduling fields but no terminationGracePeriodSeconds, while v1beta1's
    # PredictorSpec carries the PodSpec's fields inline. In raw deployment mode KServe copies it into the
    # Deployment's pod template (else Kubernetes' default, 30 s, which the default drain fits with the margin). In
    # serverless mode Knative's webhook refuses the field ("must not set the field(s):
    # spec.template.spec.terminationGracePeriodSeconds") and sets it from the revision's timeout
    # (predictor.timeout, Knative's default 300 s), so it is left out there.
    if o.deployment_mode == "raw":
        predictor["terminationGracePeriodSeconds"] = termination_grace_s(o)
    metadata: dict[str, Any] = {"name": o.name, "namespace": o.namespace}
    if o.deployment_mode is not None:
        # asked for: whether the grace period above may be set depends on it, so it is not left to the cluster
        metadata["annotations"] = {MODE_ANNOTATION: MODES[o.deployment_mode]}
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }
    comment = f"""{o.name}: the {o.model_format} model at {o.storage_uri}, served by the {o.runtime} runtime.
V2: POST /v2/models/{o.name}/infer; V1: POST /v1/models/{o.name}:predict (with a key: Authorization: Bearer ...).
The key store's URL (required) and Redis (optional) come from the Secret {o.secret_name!r} in {o.namespace!r},
keys database-url and redis-url, as for `modelapi deploy kubernetes`.
{_drain_note(o)}"""
    return Manifest(body, comment)


def _drain_note(o: Options) -> str:
    mode = "The cluster's deployment" if o.deployment_mode is None else f"{MODES[o.deployment_mode]}"
    drain = f"""{mode} mode. On SIGTERM the server drains in-flight requests for up to
{o.grace_period_s} s (--graceful-timeout, in the model's args as well as the runtime's: the cluster-wide runtime
may carry another value)"""
    if o.deployment_mode == "raw":
        return f"""{drain}; terminationGracePeriodSeconds ({termination_grace_s(o)}) covers it plus a margin,
so Kubernetes never kills a draining server."""
    if o.deployment_mode == "serverless":
        return f"""{drain}; Knative refuses terminationGracePeriodSeconds and sets it from
predictor.timeout (300 s by default): keep that at {termination_grace_s(o)} s or more."""
    return f"""{drain}; that leaves at least {DRAIN_MARGIN_S} s of the {DEFAULT_GRACE_S} s grace period a raw
deployment's pod gets by default (Knative's, in serverless mode, comes from predictor.timeout, 300 s by default)."""


def manifests(o: Options) -> list[Manifest]:
    return [runtime(o), inference_service(o)]
