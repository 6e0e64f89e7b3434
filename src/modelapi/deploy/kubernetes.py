"""The plain Kubernetes manifests for one modelapi server: Deployment, Service, HorizontalPodAutoscaler,
PodDisruptionBudget, NetworkPolicy and ServiceAccount (``modelapi deploy kubernetes``, docs/deployment.md).

Every choice that matters in production is made here once: probes on the V2 health routes of the operations
port, a drain that loses no request on a rollout or scale-in, a pod that runs as a non-root user on a read-only
root filesystem with no capabilities, and the database and Redis URLs read from a Secret (never written in a
manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .manifest import Manifest

PORT = 8080
#: the operations port (--metrics-port): /metrics and the health routes, on a listener of their own, so that the
#: kubelet's probes, each on a new connection, never queue behind a flood's connections to the API port
OPS_PORT = 9090
#: the Service's port for the API's HTTP (-> the pods' PORT)
SERVICE_PORT = 80
UID = 10001  # above 10000: no clash with a node's own users (checkov CKV_K8S_40)
STATE_DIR = "/var/lib/modelapi"
PRESTOP_S = 5  # the pause before SIGTERM, while the endpoint leaves every load balancer


@dataclass(frozen=True)
class Options:
    name: str
    image: str
    model: str  # the path the container serves: a model file, an MLflow directory or a repository
    namespace: str = "modelapi"
    replicas: int = 2
    max_replicas: int | None = None  # the HPA's ceiling; default 4 x replicas
    cpu: str = "1"
    memory: str = "1Gi"
    grace_period_s: int = 30  # the server's --graceful-timeout
    secret: str | None = None  # the Secret holding database-url and redis-url; default <name>-urls
    monitoring_namespace: str = "monitoring"
    grpc_port: int | None = None  # the server's --grpc-port: a container port, a Service port and ingress with it
    serve_args: tuple[str, ...] = ()

    @property
    def secret_name(self) -> str:
        return self.secret or f"{self.name}-urls"


def labels(o: Options) -> dict[str, str]:
    """The selector labels: stable for the life of the Deployment (a selector cannot change)."""
    return {"app.kubernetes.io/name": "modelapi", "app.kubernetes.io/instance": o.name}


def _meta(o: Options) -> dict[str, Any]:
    return {"name": o.name, "namespace": o.namespace, "labels": {**labels(o), "app.kubernetes.io/component": "server"}}


def serve_args(o: Options) -> list[str]:
    return [
        "serve",
        o.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--metrics-port",
        str(OPS_PORT),
        "--graceful-timeout",
        str(o.grace_period_s),
        "--log-format",
        "json",
        *(["--grpc-port", str(o.grpc_port)] if o.grpc_port is not None else []),
        *o.serve_args,
    ]


def secret_env(secret: str) -> list[dict[str, Any]]:
    """The URLs from a Secret: the database holds the API keys every replica checks (required); Redis carries
    jobs to `modelapi worker` processes (optional: without it each pod runs its jobs in process)."""
    return [
        {
            "name": "MODELAPI_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "database-url", "optional": False}},
        },
        {
            "name": "MODELAPI_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "redis-url", "optional": True}},
        },
    ]


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def writable_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """emptyDirs for the only paths the server writes (its state dir, /tmp) on a read-only root filesystem."""
    volumes = [
        {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [{"name": "state", "mountPath": STATE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    return volumes, mounts


def probes(port: int | str = "ops") -> dict[str, Any]:
    """The probes, on the operations port (``ops``, the container's port of that name) by default."""
    return {
        # loading a large model can take minutes: liveness waits until the process has answered once
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 150,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        # 503 while models load and while draining: the Service sends nothing to a pod that is not ready
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
    }


def deployment(o: Options) -> Manifest:
    volumes, mounts = writable_volumes()
    grace = PRESTOP_S + o.grace_period_s + 10
    container = {
        "name": "modelapi",
        "image": o.image,
        "imagePullPolicy": "Always",
        "args": serve_args(o),
        "ports": [
            {"name": "http", "containerPort": PORT, "protocol": "TCP"},
            {"name": "ops", "containerPort": OPS_PORT, "protocol": "TCP"},
            *([{"name": "grpc", "containerPort": o.grpc_port, "protocol": "TCP"}] if o.grpc_port is not None else []),
        ],
        "env": [{"name": "MODELAPI_STATE_DIR", "value": STATE_DIR}, *secret_env(o.secret_name)],
        **probes(),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
        "resources": {
            "requests": {"cpu": o.cpu, "memory": o.memory},
            "limits": {"cpu": o.cpu, "memory": o.memory},
        },
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    pod_meta = {
        "labels": {**labels(o), "app.kubernetes.io/component": "server"},
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(OPS_PORT),
            "prometheus.io/path": "/metrics",
        },
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(o),
        "spec": {
            "replicas": o.replicas,
            "selector": {"matchLabels": labels(o)},
            # a new pod is ready before an old one goes: a rollout never serves with fewer pods
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "serviceAccountName": o.name,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    comment = f"""modelapi serving {o.model} from {o.image}.
Probes: startup and liveness on /v2/health/live (the process answers), readiness on /v2/health/ready (every
model loaded, not draining), on the operations port {OPS_PORT} (--metrics-port, named ops): a listener of its
own, so a flood of connections to the API port cannot delay them past their timeout and have a healthy pod
restarted or taken out of the Service. On scale-in or rollout the pod first pauses {PRESTOP_S} s (preStop) while its
endpoint leaves the Service, then gets SIGTERM and drains in-flight requests for up to {o.grace_period_s} s
(--graceful-timeout); terminationGracePeriodSeconds ({grace}) covers both plus a margin, so Kubernetes never
kills a draining server. The root filesystem is read-only: the state dir ({STATE_DIR}) and /tmp are emptyDirs.
MODELAPI_DATABASE_URL (the shared key store, required) and MODELAPI_REDIS_URL (jobs, optional) come from the
Secret {o.secret_name!r}, keys database-url and redis-url:
  kubectl -n {o.namespace} create secret generic {o.secret_name} \\
    --from-literal=database-url=postgresql+psycopg://USER:PASSWORD@HOST:5432/DB \\
    --from-literal=redis-url=redis://HOST:6379/0
/metrics and the health routes are served without a key on port {OPS_PORT} (nothing else is served there); the
API port needs a key (modelapi keys create --database-url ...).{grpc_note(o)}
Applying this file again sets the replica count back to {o.replicas}; the HPA then scales it again."""
    return Manifest(body, comment)


def grpc_note(o: Options) -> str:
    if o.grpc_port is None:
        return ""
    return f"""
gRPC (the Open Inference Protocol, --grpc-port) on container port {o.grpc_port}, named grpc, with the same keys; the
probes stay on HTTP (the ops port), whose readiness the gRPC health service follows."""


def service(o: Options) -> Manifest:
    ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    if o.grpc_port is not None:  # the same number on the Service as in the pod: gRPC clients name it
        ports.append({"name": "grpc", "port": o.grpc_port, "targetPort": "grpc", "protocol": "TCP"})
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(o),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(o),
            # the API only (HTTP, and gRPC with --grpc-port): the operations port's answers are each pod's own,
            # asked of each pod (the kubelet's probes; Prometheus through the pods' annotations or a PodMonitor),
            # never of any ready pod
            "ports": ports,
        },
    }
    comment = f"""In-cluster address: http://{o.name}.{o.namespace}.svc/ (port 80 -> the pods' {PORT}); only ready pods
receive traffic. Put an Ingress or a Gateway in front of it for callers outside the cluster."""
    if o.grpc_port is not None:
        comment += f"""
gRPC: {o.name}.{o.namespace}.svc:{o.grpc_port} (port grpc). gRPC keeps one HTTP/2 connection per client, so a
Service spreads clients, not calls, across pods: balance per call on the client side (a headless Service and
round_robin) or with a gRPC-aware proxy."""
    return Manifest(body, comment)


def autoscaler(o: Options) -> Manifest:
    ceiling = o.max_replicas or max(o.replicas * 4, o.replicas + 1)
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(o),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": o.name},
            "minReplicas": o.replicas,
            "maxReplicas": ceiling,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
            # scale out at once, scale in slowly: a pod that drains is capacity lost for a while
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }
    comment = f"""Scales {o.name} between {o.replicas} and {ceiling} pods on CPU (70 % of the request: the model's own
compute is what saturates a modelapi pod). To scale on requests in flight instead, expose modelapi's gauge through
prometheus-adapter (a custom metrics API) and add to spec.metrics:
  - type: Pods
    pods:
      metric:
        name: modelapi_requests_in_flight
      target:
        type: AverageValue
        averageValue: "32"   # about --max-inflight / 16: scale out long before requests get 503"""
    return Manifest(body, comment)


def disruption_budget(o: Options) -> Manifest:
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(o),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(o)}},
    }
    comment = """A node drain or cluster upgrade evicts at most one pod at a time (each drains its requests first).
maxUnavailable rather than minAvailable: with one replica a drain can still proceed."""
    return Manifest(body, comment)


def network_policy(o: Options) -> Manifest:
    api_ports = [{"port": PORT, "protocol": "TCP"}]
    if o.grpc_port is not None:
        api_ports.append({"port": o.grpc_port, "protocol": "TCP"})
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(o),
        "spec": {
            "podSelector": {"matchLabels": labels(o)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"ports": api_ports},
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": o.monitoring_namespace}}}
                    ],
                    "ports": [{"port": OPS_PORT, "protocol": "TCP"}],
                },
            ],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {
                    "ports": [
                        {"port": 5432, "protocol": "TCP"},
                        {"port": 6379, "protocol": "TCP"},
                        {"port": 4318, "protocol": "TCP"},
                    ]
                },
            ],
        },
    }
    api = f"the API port ({PORT})" if o.grpc_port is None else f"the API ports ({PORT}, gRPC {o.grpc_port})"
    comment = f"""Ingress: {api} from anywhere the cluster routes (narrow it with a `from` naming your
ingress controller's namespace); the operations port ({OPS_PORT}: /metrics, health) only from the namespace
{o.monitoring_namespace!r}, and from the pod's own node, whose kubelet sends the probes: a NetworkPolicy always
allows traffic from the node a pod runs on.
Egress: DNS, PostgreSQL (5432), Redis (6379) and OTLP traces over HTTP (4318); nothing else, so a compromised
pod cannot reach the rest of the network. Change the ports if your services listen elsewhere."""
    return Manifest(body, comment)


def service_account(o: Options) -> Manifest:
    body = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(o),
        "automountServiceAccountToken": False,
    }
    comment = "The pods' own identity, with no API token mounted: modelapi never talks to the Kubernetes API."
    return Manifest(body, comment)


def manifests(o: Options) -> list[Manifest]:
    return [
        service_account(o),
        deployment(o),
        service(o),
        autoscaler(o),
        disruption_budget(o),
        network_policy(o),
    ]
