"""``modelapi deploy kubernetes``: what each manifest sets, read back from the YAML it writes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelapi.cli import main
from modelapi.deploy import kubernetes as k8s
from modelapi.deploy.manifest import write

from .conftest import IMAGE, generate


def _container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_writes_every_manifest(kubernetes: dict[str, dict[str, Any]]) -> None:
    assert set(kubernetes) == {
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert {m["metadata"]["name"] for m in kubernetes.values()} == {"iris"}  # from the model's file name
    assert {m["metadata"]["namespace"] for m in kubernetes.values()} == {"modelapi"}


def test_the_container_serves_the_model_on_all_interfaces(kubernetes: dict[str, dict[str, Any]]) -> None:
    container = _container(kubernetes)
    assert container["image"] == IMAGE
    args = container["args"]
    assert args[:2] == ["serve", "/models/iris.skops"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "8080"
    assert args[args.index("--metrics-port") + 1] == "9090"


def test_probes_use_the_v2_health_routes_on_the_operations_port(kubernetes: dict[str, dict[str, Any]]) -> None:
    container = _container(kubernetes)
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "ops"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "ops"}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "ops"}
    # the port named ops is the one the server serves its health routes on: its --metrics-port, not the API's
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert ports == {"http": int(args[args.index("--port") + 1]), "ops": int(args[args.index("--metrics-port") + 1])}
    assert ports["ops"] != ports["http"]
    annotations = kubernetes["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["ops"])
    # the startup probe gives a slow model load five minutes before liveness may restart the pod
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_termination_outlasts_the_pause_and_the_drain(kubernetes: dict[str, dict[str, Any]]) -> None:
    pod = kubernetes["Deployment"]["spec"]["template"]["spec"]
    container = _container(kubernetes)
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    args = container["args"]
    grace = int(args[args.index("--graceful-timeout") + 1])
    assert pause >= 3
    assert pod["terminationGracePeriodSeconds"] > pause + grace
    rolling = kubernetes["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_the_pod_is_locked_down(kubernetes: dict[str, dict[str, Any]]) -> None:
    pod = kubernetes["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = _container(kubernetes)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # the only writable paths: the state dir and /tmp, each an emptyDir
    mounts = {m["mountPath"]: m["name"] for m in _container(kubernetes)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == {"/var/lib/modelapi", "/tmp"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    env = {e["name"]: e for e in _container(kubernetes)["env"]}
    assert env["MODELAPI_STATE_DIR"]["value"] == "/var/lib/modelapi"
    assert kubernetes["ServiceAccount"]["automountServiceAccountToken"] is False


def test_resources_are_requested_and_limited(kubernetes: dict[str, dict[str, Any]]) -> None:
    resources = _container(kubernetes)["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert resources["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_urls_come_from_a_secret(kubernetes: dict[str, dict[str, Any]]) -> None:
    env = {e["name"]: e for e in _container(kubernetes)["env"]}
    database = env["MODELAPI_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    redis = env["MODELAPI_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert database == {"name": "iris-urls", "key": "database-url", "optional": False}
    assert redis == {"name": "iris-urls", "key": "redis-url", "optional": True}
    assert "value" not in env["MODELAPI_DATABASE_URL"]


def test_service_autoscaler_budget_and_policy(kubernetes: dict[str, dict[str, Any]]) -> None:
    selector = kubernetes["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kubernetes["Service"]["spec"]["selector"] == selector
    assert kubernetes["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert kubernetes["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    hpa = kubernetes["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert kubernetes["PodDisruptionBudget"]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    policy = kubernetes["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    api_rule, ops_rule = policy["ingress"]
    assert api_rule == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    assert ops_rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert ops_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # the Service carries the API alone: the operations port's answers are each pod's own
    assert kubernetes["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_without_grpc_port_no_grpc_is_exposed(kubernetes: dict[str, dict[str, Any]]) -> None:
    container = _container(kubernetes)
    assert "--grpc-port" not in container["args"]
    assert "grpc" not in {p["name"] for p in container["ports"]}


def test_grpc_port_is_served_and_reachable_through_the_pod_the_service_and_the_policy(tmp_path: Path) -> None:
    found = generate(tmp_path, "kubernetes", "/models/iris.skops", "--image", IMAGE, "--grpc-port", "8001")
    container = _container(found)
    args = container["args"]
    assert args[args.index("--grpc-port") + 1] == "8001"
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["grpc"] == {"name": "grpc", "containerPort": 8001, "protocol": "TCP"}
    assert set(ports) == {"http", "ops", "grpc"}
    # the probes stay on HTTP, on the operations port
    assert {container[p]["httpGet"]["port"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {"ops"}
    service_ports = {p["name"]: p for p in found["Service"]["spec"]["ports"]}
    assert service_ports["grpc"] == {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP"}
    assert service_ports["http"]["targetPort"] == "http"
    api_rule, ops_rule = found["NetworkPolicy"]["spec"]["ingress"]
    assert api_rule == {"ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}]}
    assert ops_rule["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_the_autoscaler_carries_a_commented_example_on_a_modelapi_metric() -> None:
    options = k8s.Options(name="iris", image=IMAGE, model="/models/iris.skops")
    out = io.StringIO()
    write([k8s.autoscaler(options)], "-", out)
    text = out.getvalue()
    commented = "\n".join(line[2:] for line in text.splitlines() if line.startswith("#   "))
    example = yaml.safe_load(commented)
    assert example[0]["pods"]["metric"]["name"] == "modelapi_requests_in_flight"
    assert yaml.safe_load(text)["kind"] == "HorizontalPodAutoscaler"  # the comment leaves the YAML as it was


def test_stdout_is_one_stream_kubectl_reads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "kubernetes", "/models", "--image", IMAGE, "--name", "churn", "--serve-arg=--watch"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs][:2] == ["ServiceAccount", "Deployment"]
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][1] == "/models"
    assert container["args"][-1] == "--watch"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "modelapi"], "--image: 'modelapi' names no version"),
        (["--image", "modelapi:latest"], "names no version"),
        (["--image", IMAGE, "--name", "Iris_1"], "--name: 'Iris_1' is not a Kubernetes object name"),
        (["--image", IMAGE, "--replicas", "4", "--max-replicas", "2"], "--max-replicas 2 is below --replicas 4"),
        (["--image", IMAGE, "--cpu", "two"], "--cpu: 'two' is not a Kubernetes quantity above 0; expected e.g. 1,"),
        (["--image", IMAGE, "--cpu", "0"], "--cpu: '0' is not a Kubernetes quantity above 0"),
        (["--image", IMAGE, "--memory", "1 GB"], "--memory: '1 GB' is not a Kubernetes quantity above 0"),
        (["--image", IMAGE, "--serve-arg=--metrics-port=9100"], "--serve-arg=--metrics-port=9100: the manifests set"),
        (["--image", IMAGE, "--serve-arg=--port", "--serve-arg=80"], "--serve-arg=--port: the manifests set --port"),
        # argparse takes an unambiguous abbreviation of a long option: the server would listen elsewhere too
        (["--image", IMAGE, "--serve-arg=--metrics-p=9100"], "--serve-arg=--metrics-p=9100: the manifests set"),
        (["--image", IMAGE, "--serve-arg=--ho=10.0.0.1"], "--serve-arg=--ho=10.0.0.1: the manifests set --host"),
        # the drain is sized by deploy's own flag, terminationGracePeriodSeconds with it; the server's alone would be
        # cut short by the kubelet
        (["--image", IMAGE, "--serve-arg=--graceful-timeout=60"], "give `modelapi deploy kubernetes --graceful"),
        (["--image", IMAGE, "--serve-arg=--graceful=60"], "--serve-arg=--graceful=60: give `modelapi deploy"),
        # a gRPC port the server alone knows is in no container port, Service or NetworkPolicy: unreachable
        (["--image", IMAGE, "--serve-arg=--grpc-port=8001"], "give `modelapi deploy kubernetes --grpc-port PORT`"),
        (["--image", IMAGE, "--serve-arg=--grpc-p", "--serve-arg=8001"], "--serve-arg=--grpc-p: give `modelapi"),
        (["--image", IMAGE, "--grpc-port", "9090"], "--grpc-port 9090: the pod serves HTTP on 8080 and its operations"),
        (["--image", IMAGE, "--grpc-port", "8080"], "--grpc-port 8080: the pod serves HTTP on 8080"),
        # the Service's own HTTP port: two Service ports 80 are a Service the API server rejects
        (["--image", IMAGE, "--grpc-port", "80"], "--grpc-port 80: the Service serves HTTP on port 80"),
        # a non-root pod with no capabilities may not listen below 1024: the pod would crash-loop
        (["--image", IMAGE, "--grpc-port", "443"], "--grpc-port 443: the pod runs as a non-root user"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "kubernetes", "/models/iris.skops", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_grpc_port_must_be_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["deploy", "kubernetes", "/models/iris.skops", "--image", IMAGE, "--grpc-port", "70000"])
    assert exit.value.code == 2
    assert "--grpc-port: expected a port number from 1 to 65535, got 70000" in capsys.readouterr().err


def test_a_name_is_derived_from_any_model_path() -> None:
    from modelapi.deploy.manifest import name_from

    assert name_from("/models/Churn_Model.v2.onnx") == "churn-model-v2"
    assert name_from("/mnt/models/") == "models"
    assert name_from("/models/2024.skops") == "modelapi-2024"
