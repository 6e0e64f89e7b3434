"""``modelapi deploy kserve``: the ClusterServingRuntime and the InferenceService that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelapi.cli import main

from .conftest import IMAGE, generate


def test_the_runtime_serves_mnt_models_over_v1_and_v2(kserve: dict[str, dict[str, Any]]) -> None:
    runtime = kserve["ClusterServingRuntime"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v1", "v2"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"sklearn", "onnx", "xgboost", "lightgbm", "mlflow"}
    # named explicitly by an InferenceService only: installing it takes over no other model in the cluster
    assert not any(f["autoSelect"] for f in spec["supportedModelFormats"])
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == IMAGE
    args = container["args"]
    assert args[:2] == ["serve", "/mnt/models"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "8080"
    assert args[args.index("--model-name") + 1] == "{{.Name}}"


def test_the_runtime_brings_its_own_http_probes_on_the_operations_port(kserve: dict[str, dict[str, Any]]) -> None:
    runtime = kserve["ClusterServingRuntime"]
    [container] = runtime["spec"]["containers"]
    args = container["args"]
    ops = int(args[args.index("--metrics-port") + 1])
    assert ops != int(args[args.index("--port") + 1])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": ops}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": ops}
    assert "startupProbe" not in container  # Knative (serverless mode) refuses one
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # Knative takes one port only
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(ops)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/var/lib/modelapi", "/tmp"}


def test_the_inference_service_uses_the_runtime(kserve: dict[str, dict[str, Any]]) -> None:
    isvc = kserve["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "iris" and isvc["metadata"]["namespace"] == "modelapi"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == kserve["ClusterServingRuntime"]["metadata"]["name"] == "modelapi"
    assert model["storageUri"] == "gs://bucket/iris"
    assert model["modelFormat"] == {"name": "sklearn"}
    assert model["protocolVersion"] == "v2"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in model["env"]}
    assert env["MODELAPI_DATABASE_URL"]["name"] == "iris-urls"
    assert model["args"] == ["--graceful-timeout", "20"]  # the drain its grace period is sized from


def _drain(args: list[str]) -> int:
    return int(args[args.index("--graceful-timeout") + 1])


def test_by_default_the_drain_fits_a_pods_default_grace_period_in_the_clusters_mode(
    kserve: dict[str, dict[str, Any]],
) -> None:
    [container] = kserve["ClusterServingRuntime"]["spec"]["containers"]
    isvc = kserve["InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    # explicit, not the server's default (30 s, the whole of a pod's default grace period): 10 s are left
    assert _drain(container["args"]) == _drain(model["args"]) == 20
    # the mode is left to the cluster, and no grace period is set (Knative would refuse it)
    assert "annotations" not in isvc["metadata"]
    assert "terminationGracePeriodSeconds" not in isvc["spec"]["predictor"]


def test_raw_mode_gives_the_pod_a_grace_period_beyond_the_servers_drain(tmp_path: Path) -> None:
    found = generate(
        tmp_path, "kserve", "--name", "iris", "--storage-uri", "gs://b/iris", "--image", IMAGE,
        "--deployment-mode", "raw",
    )  # fmt: skip
    isvc = found["InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    # the PodSpec's field, inline in the predictor; a margin over the drain (KServe adds no preStop pause)
    assert isvc["spec"]["predictor"]["terminationGracePeriodSeconds"] == _drain(model["args"]) + 10 == 30
    assert "terminationGracePeriodSeconds" not in found["ClusterServingRuntime"]["spec"]


def test_a_drain_longer_than_the_default_grace_period_allows_needs_a_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["deploy", "kserve", "--name", "iris", "--storage-uri", "gs://b/iris", "--image", IMAGE]
    assert main([*args, "--graceful-timeout", "21"]) == 2
    assert "a drain over 20 s needs --deployment-mode raw" in capsys.readouterr().err


def test_graceful_timeout_sizes_the_drain_and_the_grace_period(tmp_path: Path) -> None:
    found = generate(
        tmp_path, "kserve", "--name", "iris", "--storage-uri", "gs://b/iris", "--image", IMAGE,
        "--deployment-mode", "raw", "--graceful-timeout", "90", "--serve-arg=--trust-pickle",
    )  # fmt: skip
    [container] = found["ClusterServingRuntime"]["spec"]["containers"]
    predictor = found["InferenceService"]["spec"]["predictor"]
    assert _drain(container["args"]) == 90
    # KServe appends the model's args to the runtime's: the last --graceful-timeout is the one the server takes
    assert predictor["model"]["args"] == ["--graceful-timeout", "90", "--trust-pickle"]
    assert predictor["terminationGracePeriodSeconds"] == 100


def test_serverless_mode_leaves_the_grace_period_to_knative(tmp_path: Path) -> None:
    found = generate(
        tmp_path, "kserve", "--name", "iris", "--storage-uri", "gs://b/iris", "--image", IMAGE,
        "--deployment-mode", "serverless",
    )  # fmt: skip
    isvc = found["InferenceService"]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Serverless"}
    # Knative's webhook refuses the field and sets it from the revision's timeout (300 s by default)
    assert "terminationGracePeriodSeconds" not in isvc["spec"]["predictor"]
    assert _drain(isvc["spec"]["predictor"]["model"]["args"]) == 20


GRACE_REFUSED = "give `modelapi deploy kserve --graceful-timeout SECONDS` instead"
DELAY_REFUSED = "the pod's grace period is not sized for it"


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("--serve-arg=--graceful-timeout=60", GRACE_REFUSED),
        ("--serve-arg=--graceful=60", GRACE_REFUSED),
        ("--serve-arg=--shutdown-delay=60", DELAY_REFUSED),
        ("--serve-arg=--shutdown=60", DELAY_REFUSED),
    ],
)
def test_serve_args_that_change_the_drain_are_refused(arg: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["deploy", "kserve", "--name", "iris", "--storage-uri", "gs://bucket/iris", "--image", IMAGE, arg]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{arg}: {why}" in err
    assert "Traceback" not in err


def test_format_protocol_runtime_and_extra_args(tmp_path: Path) -> None:
    found = generate(
        tmp_path, "kserve", "--name", "churn", "--storage-uri", "s3://models/churn", "--image", IMAGE,
        "--format", "lightgbm", "--protocol", "v1", "--runtime", "modelapi-cpu", "--serve-arg=--trust-pickle",
    )  # fmt: skip
    model = found["InferenceService"]["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "lightgbm"}
    assert model["protocolVersion"] == "v1"
    assert model["runtime"] == found["ClusterServingRuntime"]["metadata"]["name"] == "modelapi-cpu"
    assert model["args"][-1] == "--trust-pickle"  # KServe appends them to the runtime's


def test_a_storage_uri_must_be_a_uri(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "kserve", "--name", "iris", "--storage-uri", "/models/iris", "--image", IMAGE]) == 2
    assert "--storage-uri: '/models/iris' is not a URI" in capsys.readouterr().err


@pytest.mark.parametrize(
    "grpc", [["--grpc-port", "8001"], ["--serve-arg=--grpc-port=8001"], ["--serve-arg=--grpc=9000"]]
)
def test_grpc_is_refused_with_the_reason(grpc: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["deploy", "kserve", "--name", "iris", "--storage-uri", "gs://bucket/iris", "--image", IMAGE, *grpc]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "modelapi deploy kserve serves HTTP only: KServe sends a predictor's traffic to one port" in err
    assert "use `modelapi deploy kubernetes --grpc-port PORT`" in err
    assert "Traceback" not in err
