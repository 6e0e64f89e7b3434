"""``modelapi deploy kubernetes | kserve``: write manifests (to stdout, or one file per manifest in a directory)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

_FORMATS = ("sklearn", "onnx", "xgboost", "lightgbm", "mlflow")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text}")
    return value


#: why ``deploy kserve`` serves no gRPC (its --grpc-port, and --serve-arg=--grpc-port, are refused with this)
KSERVE_NO_GRPC = (
    "modelapi deploy kserve serves HTTP only: KServe sends a predictor's traffic to one port of its container, "
    "which the runtime gives to HTTP (8080; in serverless mode Knative refuses a second port, and gRPC would take "
    "that one, named h2c, in place of HTTP); for gRPC use `modelapi deploy kubernetes --grpc-port PORT`"
)


def add_deploy_command(sub: Any) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="write Kubernetes or KServe manifests for a modelapi image",
        description="Write manifests for a modelapi image (docs/deployment.md). Nothing is applied: review them, "
        "then kubectl apply -f.",
    )
    targets = deploy.add_subparsers(dest="deploy_target", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--image", required=True, help="the image to run, with a tag or digest (not latest), built from the "
            "repository's Dockerfile or FROM it",
        )  # fmt: skip
        parser.add_argument("--namespace", default="modelapi", help="the namespace (default modelapi)")
        parser.add_argument("--cpu", default="1", help="CPU request and limit per pod (default 1)")
        parser.add_argument("--memory", default="1Gi", help="memory request and limit per pod (default 1Gi)")
        parser.add_argument(
            "--secret", metavar="NAME",
            help="the Secret with the keys database-url and redis-url (default: NAME-urls)",
        )  # fmt: skip
        parser.add_argument(
            "--serve-arg", dest="serve_args", action="append", default=[], metavar="ARG",
            help="one more argument for `modelapi serve` in the container, e.g. --serve-arg=--trust-pickle "
            "(repeatable)",
        )  # fmt: skip
        parser.add_argument(
            "--output", default="-", metavar="DIR|-",
            help="a directory to write one file per manifest into, or - for one stream on stdout (default)",
        )  # fmt: skip

    k8s = targets.add_parser(
        "kubernetes",
        help="Deployment, Service, HPA, PodDisruptionBudget, NetworkPolicy, ServiceAccount",
        description="Manifests for modelapi serving MODEL (its path inside the container) from --image.",
    )
    k8s.add_argument("model", metavar="MODEL|DIR", help="what the container serves: its path inside the image")
    k8s.add_argument("--name", help="the objects' name (default: from MODEL's file name)")
    k8s.add_argument("--replicas", type=_positive, default=2, help="pods to start with, the HPA's floor (default 2)")
    k8s.add_argument("--max-replicas", type=_positive, help="the HPA's ceiling (default 4 x --replicas)")
    k8s.add_argument(
        "--graceful-timeout", type=_positive, default=30, metavar="SECONDS",
        help="seconds a pod drains in-flight requests after SIGTERM (default 30)",
    )  # fmt: skip
    k8s.add_argument(
        "--grpc-port", type=_port, metavar="PORT",
        help="also serve gRPC (the Open Inference Protocol; the image needs the grpc extra) on this port: a "
        "container port named grpc, a Service port and a NetworkPolicy ingress port with it (probes stay on HTTP)",
    )  # fmt: skip
    k8s.add_argument(
        "--monitoring-namespace", default="monitoring",
        help="the namespace whose Prometheus may scrape /metrics (default monitoring)",
    )  # fmt: skip
    common(k8s)

    kserve = targets.add_parser(
        "kserve",
        help="a ClusterServingRuntime and an InferenceService",
        description="modelapi as a KServe ClusterServingRuntime, and an InferenceService serving --storage-uri.",
    )
    kserve.add_argument("--name", required=True, help="the InferenceService's name (and its model's)")
    kserve.add_argument("--storage-uri", required=True, help="where the model is: s3://, gs://, pvc://, https://...")
    kserve.add_argument("--format", dest="model_format", choices=_FORMATS, default="sklearn", help="default sklearn")
    kserve.add_argument("--protocol", choices=("v1", "v2"), default="v2", help="protocolVersion (default v2)")
    kserve.add_argument("--runtime", default="modelapi", help="the ClusterServingRuntime's name (default modelapi)")
    kserve.add_argument(
        "--graceful-timeout", type=_positive, metavar="SECONDS",
        help="seconds a pod drains in-flight requests after SIGTERM (default 20: 10 s within the 30 s grace "
        "period a pod gets by default); in raw mode the predictor's terminationGracePeriodSeconds is this plus 10; "
        "a longer drain needs --deployment-mode",
    )  # fmt: skip
    kserve.add_argument(
        "--deployment-mode", choices=("raw", "serverless"), default=None,
        help="write the InferenceService's serving.kserve.io/deploymentMode: raw (RawDeployment: the pod's grace "
        "period is set) or serverless (Knative, which sets it from predictor.timeout); default: the cluster's",
    )  # fmt: skip
    kserve.add_argument("--grpc-port", type=_port, help=argparse.SUPPRESS)  # refused, with KSERVE_NO_GRPC
    common(kserve)


def run_deploy(args: argparse.Namespace) -> int:
    from . import kserve, kubernetes
    from .manifest import check_image, check_name, check_quantity, name_from, write

    image = check_image(args.image)
    namespace = check_name(args.namespace, "--namespace")
    serve_args = tuple(args.serve_args)
    from ..cli import _SERVE_FLAGS  # here: the cli imports this module

    options = [flag for flags, _, _ in _SERVE_FLAGS.values() for flag in flags if flag.startswith("--")]
    for arg in serve_args:  # the probes, the container's ports and the NetworkPolicy name the manifests' own
        flag = arg.split("=", 1)[0]
        # as argparse reads it: the option itself, else every option it abbreviates (more than one: an error there)
        meant = [flag] if flag in options else [o for o in options if len(flag) > 2 and o.startswith(flag)]
        for own in ("--host", "--port", "--metrics-port"):
            if own in meant:
                raise ValueError(
                    f"--serve-arg={arg}: the manifests set {own} themselves (their probes and ports follow it)"
                )
        # the pod's terminationGracePeriodSeconds is sized from deploy's own --graceful-timeout: a longer drain
        # given to the server alone would be cut short by the kubelet's SIGKILL
        if "--graceful-timeout" in meant:
            sized = "Deployment's" if args.deploy_target == "kubernetes" else "InferenceService's (raw mode)"
            raise ValueError(
                f"--serve-arg={arg}: give `modelapi deploy {args.deploy_target} --graceful-timeout SECONDS` "
                f"instead; the {sized} terminationGracePeriodSeconds is sized from it"
            )
        # the manifests' preStop pause does the shutdown delay's work (the pod leaves the endpoints first), and a
        # delay inside the server would count against a grace period sized without it
        if "--shutdown-delay" in meant:
            raise ValueError(
                f"--serve-arg={arg}: the pod's grace period is not sized for it; on Kubernetes the endpoints drop a "
                "terminating pod whatever its readiness says, and the Deployment's preStop pause lets them first"
            )
        # a gRPC port given to the server alone is in no container port, Service or NetworkPolicy: unreachable
        if "--grpc-port" in meant:
            if args.deploy_target == "kubernetes":
                raise ValueError(
                    f"--serve-arg={arg}: give `modelapi deploy kubernetes --grpc-port PORT` instead; the container's "
                    "ports, the Service and the NetworkPolicy follow it"
                )
            raise ValueError(f"--serve-arg={arg}: {KSERVE_NO_GRPC}")
    cpu = check_quantity(args.cpu, "--cpu", "1, 2, 500m")
    memory = check_quantity(args.memory, "--memory", "1Gi, 512Mi, 2G")
    if args.deploy_target == "kubernetes":
        name = check_name(args.name) if args.name else name_from(args.model)
        if args.max_replicas is not None and args.max_replicas < args.replicas:
            raise ValueError(f"--max-replicas {args.max_replicas} is below --replicas {args.replicas}")
        if args.grpc_port in (kubernetes.PORT, kubernetes.OPS_PORT):
            raise ValueError(
                f"--grpc-port {args.grpc_port}: the pod serves HTTP on {kubernetes.PORT} and its operations port on "
                f"{kubernetes.OPS_PORT}; pick another, e.g. 8001"
            )
        if args.grpc_port == kubernetes.SERVICE_PORT:  # the Service's ports: one number each, or it is refused
            raise ValueError(
                f"--grpc-port {args.grpc_port}: the Service serves HTTP on port {kubernetes.SERVICE_PORT}, and the "
                "Service's gRPC port takes the same number as the pod's; pick another, e.g. 8001"
            )
        # the pod runs as a non-root user with every capability dropped: a runtime that keeps ports below 1024
        # privileged (net.ipv4.ip_unprivileged_port_start) would fail the bind, and the pod would crash-loop
        if args.grpc_port is not None and args.grpc_port < 1024:
            raise ValueError(
                f"--grpc-port {args.grpc_port}: the pod runs as a non-root user with no capabilities, which may not "
                "listen below 1024; pick a port from 1024 up, e.g. 8001"
            )
        docs = kubernetes.manifests(
            kubernetes.Options(
                name=name,
                image=image,
                model=args.model,
                namespace=namespace,
                replicas=args.replicas,
                max_replicas=args.max_replicas,
                cpu=cpu,
                memory=memory,
                grace_period_s=args.graceful_timeout,
                secret=args.secret,
                monitoring_namespace=check_name(args.monitoring_namespace, "--monitoring-namespace"),
                grpc_port=args.grpc_port,
                serve_args=serve_args,
            )
        )
    else:
        if args.grpc_port is not None:
            raise ValueError(f"--grpc-port: {KSERVE_NO_GRPC}")
        if "://" not in args.storage_uri:
            raise ValueError(
                f"--storage-uri: {args.storage_uri!r} is not a URI; expected e.g. gs://bucket/model, "
                "s3://bucket/model, pvc://claim/path or https://host/model.joblib"
            )
        drain = kserve.DEFAULT_DRAIN_S if args.graceful_timeout is None else args.graceful_timeout
        if args.deployment_mode is None and drain > kserve.DEFAULT_DRAIN_S:
            raise ValueError(
                f"--graceful-timeout {drain}: with the cluster's deployment mode the pod's grace period is not set, "
                f"and a raw deployment's is Kubernetes' default {kserve.DEFAULT_GRACE_S} s: a drain over "
                f"{kserve.DEFAULT_DRAIN_S} s needs --deployment-mode raw (which sets it) or serverless (Knative sets "
                "it from predictor.timeout)"
            )
        docs = kserve.manifests(
            kserve.Options(
                name=check_name(args.name),
                image=image,
                storage_uri=args.storage_uri,
                runtime=check_name(args.runtime, "--runtime"),
                namespace=namespace,
                model_format=args.model_format,
                protocol=args.protocol,
                cpu=cpu,
                memory=memory,
                grace_period_s=drain,
                deployment_mode=args.deployment_mode,
                secret=args.secret,
                serve_args=serve_args,
            )
        )
    for path in write(docs, args.output):
        print(f"wrote {path}", file=sys.stderr)
    return 0
