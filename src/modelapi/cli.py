"""The command line: ``modelapi serve``, ``inspect``, ``keys``, ``predict``, ``worker`` and ``monitor``.

Flags map onto Settings; a flag given on the command line wins over a ``MODELAPI_*`` environment variable,
which wins over the default. Flags left out are not passed, so the environment still applies.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from . import __version__
from .deploy.commands import add_deploy_command, run_deploy
from .errors import ModelLoadError
from .jobs.commands import JOB_FLAGS, WORKER_PORT_FLAGS, add_commands, run_command
from .monitor.command import add_monitor_command, run_monitor
from .security.keys_cli import add_keys_command, run_keys

_SERVE_FLAGS: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    **JOB_FLAGS,
    # dest: (flags, help, extra argparse kwargs)
    "names": (
        ["--name"],
        "name for the next model, in order (repeatable; default: the file stem)",
        {"action": "append"},
    ),
    "model_name": (
        ["--model-name", "--model_name"],
        "name of the only model when it is a single model (a file, an MLflow directory, or a directory holding "
        "one, as KServe's /mnt/models); a repository's models keep their names",
        {"metavar": "NAME"},
    ),
    "host": (["--host"], "address to bind (default 127.0.0.1: this machine only)", {}),
    "port": (["--port"], "TCP port (default 8000; 0 picks a free port)", {"type": int}),
    "trust_pickle": (
        ["--trust-pickle"],
        "allow pickle/joblib model files: loading one runs its code",
        {"action": "store_true"},
    ),
    "sha256": (
        ["--sha256"],
        "trust a pickle file whose SHA-256 is HEX (repeatable)",
        {"action": "append", "metavar": "HEX"},
    ),
    "max_body_bytes": (["--max-body-bytes"], "largest request body in bytes (default 32 MiB)", {"type": int}),
    "max_rows": (["--max-rows"], "most rows per prediction request (default 100000)", {"type": int}),
    # limits, TLS and CORS (docs/security.md)
    "max_json_depth": (["--max-json-depth"], "deepest JSON nesting in a body (default 32)", {"type": int}),
    "max_json_elements": (
        ["--max-json-elements"],
        "most array elements and object members in a JSON body (default 2000000)",
        {"type": int},
    ),
    "rate_limit": (
        ["--rate-limit"],
        "requests per second per API key and worker (default 100; 0: none)",
        {"type": float, "metavar": "PER_S"},
    ),
    "rate_burst": (["--rate-burst"], "requests a key may send at once (default 200)", {"type": int}),
    "max_inflight": (
        ["--max-inflight"],
        "requests per model running or queued at once, per worker; more get 503 (default 512)",
        {"type": int},
    ),
    "max_queue_ms": (
        ["--max-queue-ms"],
        "longest a request may wait for its model and its batch; a longer expected wait and run gets 503 at "
        "once (default 2000)",
        {"type": float, "metavar": "MS"},
    ),
    "pacing_slice_ms": (
        ["--pacing-slice-ms"],
        "under a flood, the longest run of request heads one turn of the event loop takes; 0: off (default 2)",
        {"type": float, "metavar": "MS"},
    ),
    "hold_early_retries": (
        ["--no-hold-early-retries"],
        "judge a retry that comes before its Retry-After as any request, instead of holding it until then and "
        "refusing it",
        {"action": "store_false"},
    ),
    "max_upload_bytes": (["--max-upload-bytes"], "largest job upload in bytes (default 2 GiB)", {"type": int}),
    "inference_timeout_s": (
        ["--inference-timeout"],
        "seconds one request's inference may take; then 504 (default 60)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "header_timeout_s": (
        ["--header-timeout"],
        "seconds a client has to send a request's headers (default 10)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "max_header_bytes": (["--max-header-bytes"], "largest request head (default 65536)", {"type": int}),
    "body_timeout_s": (
        ["--body-timeout"],
        "seconds a client has to send a request's body; then 408 (default 60)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "keep_alive_s": (
        ["--keep-alive"],
        "seconds an idle keep-alive connection stays open (default 5)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "tls_cert": (["--tls-cert"], "PEM certificate (chain): serve HTTPS; needs --tls-key", {"metavar": "FILE"}),
    "tls_key": (["--tls-key"], "PEM private key of --tls-cert", {"metavar": "FILE"}),
    "tls_ca": (
        ["--tls-ca"],
        "PEM CA bundle: require client certificates signed by these CAs (mutual TLS)",
        {"metavar": "FILE"},
    ),
    "cors_origins": (
        ["--cors-origin"],
        "an origin browsers may call the API from, e.g. https://app.example.com (repeatable; default none)",
        {"action": "append", "metavar": "ORIGIN"},
    ),
    "log_level": (["--log-level"], "critical, error, warning, info (default) or debug", {}),
    "log_format": (
        ["--log-format"],
        "log lines as text or JSON (one object per line); default: text on a terminal, JSON otherwise",
        {"choices": ["auto", "text", "json"]},
    ),
    "access_log_flush_ms": (
        ["--access-log-flush-ms"],
        "longest an access line waits to share one write with the next ones; 0: each written at once (default 50)",
        {"type": float, "metavar": "MS"},
    ),
    "access_log_refusals_per_s": (
        ["--access-log-refusals-per-s"],
        "access lines a second, per worker, of 503s refused on the request's head under overload; the rest are "
        "counted in the rejections warning; 0: none, unbounded: every one (default 100)",
        {"metavar": "N|unbounded"},
    ),
    "tracing": (
        ["--tracing"],
        "OpenTelemetry traces, configured by the OTEL_* variables: auto (default: on when OTEL_TRACES_EXPORTER or "
        "OTEL_EXPORTER_OTLP_ENDPOINT is set and the [otel] extra is installed), on or off",
        {"choices": ["auto", "on", "off"]},
    ),
    "device": (["--device"], "where PyTorch models run: cpu (default), cuda or cuda:N", {}),
    "workers": (["--workers"], "worker processes on one port, kept running by a supervisor (default 1)", {"type": int}),
    "grace_period_s": (
        ["--graceful-timeout"],
        "seconds in-flight requests get to finish after SIGTERM (default 30)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "shutdown_delay_s": (
        ["--shutdown-delay"],
        "seconds after SIGTERM during which readiness answers 503 but requests are still accepted and served, "
        "before the server closes: longer than a load balancer takes to stop sending (default 0)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "batching": (
        ["--no-batching"],
        "run every request on its own: turn adaptive batching off for all models",
        {"action": "store_false"},
    ),
    "batch_max_size": (["--batch-max-size"], "most rows in one batch (default 1024)", {"type": int, "metavar": "ROWS"}),
    "batch_max_delay_ms": (
        ["--batch-max-delay-ms"],
        "how long a waiting request may wait for more rows, in ms (default 0)",
        {"type": float, "metavar": "MS"},
    ),
    "batch": (
        ["--batch"],
        "batching for one model: NAME=off, NAME=on, NAME=MAX_ROWS or NAME=MAX_ROWS,DELAY_MS (repeatable)",
        {"action": "append", "metavar": "NAME=SPEC"},
    ),
    # API keys (docs/security.md)
    "auth": (
        ["--auth"],
        "API key authentication: auto (default: on for a non-loopback --host or when keys exist), on, off",
        {"choices": ["auto", "on", "off"]},
    ),
    "insecure_no_auth": (
        ["--insecure-no-auth"],
        "serve without authentication even on a non-loopback --host: anyone who can connect may use every model",
        {"action": "store_true"},
    ),
    "management_routes": (
        ["--enable-management"],
        "enable the V2 repository routes (index, load, unload); they need an admin key, loopback included",
        {"action": "store_true"},
    ),
    "watch": (
        ["--watch"],
        "follow a model repository: load new and changed versions and model.toml edits, retire removed ones",
        {"action": "store_true"},
    ),
    "metrics": (
        ["--no-metrics"],
        "count nothing for GET /metrics and Triton's statistics (they answer empty)",
        {"action": "store_false"},
    ),
    # the prediction log and drift (docs/monitoring.md)
    "log_predictions": (
        ["--log-predictions"],
        "share of answered rows written to the prediction log, 0 to 1 (default 0: off; model.toml [monitor] wins)",
        {"type": float, "metavar": "SHARE"},
    ),
    "reference": (
        ["--reference"],
        "training data to measure drift against: FILE or NAME=FILE, .parquet or .csv (repeatable; default: the "
        "first --reference-rows logged rows)",
        {"action": "append", "metavar": "[NAME=]FILE"},
    ),
    "reference_rows": (["--reference-rows"], "logged rows that make the reference (default 1000)", {"type": int}),
    "drift_window_rows": (["--drift-window-rows"], "rows in the last-rows drift window (default 1000)", {"type": int}),
    "log_queue_rows": (
        ["--log-queue-rows"],
        "rows waiting for the log writer at most; more are dropped and counted (default 100000)",
        {"type": int},
    ),
    "log_flush_s": (
        ["--log-flush"],
        "seconds between the prediction log writer's batches (default 10)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "log_retention_days": (
        ["--log-retention-days"],
        "days logged rows are kept (default 30)",
        {"type": float, "metavar": "DAYS"},
    ),
    "log_max_bytes": (["--log-max-bytes"], "bytes of logged rows kept per model (default 1 GiB)", {"type": int}),
    "monitor_interval_s": (
        ["--monitor-interval"],
        "seconds between recomputations of the drift gauges (default 60)",
        {"type": float, "metavar": "SECONDS"},
    ),
    "metrics_port": (
        ["--metrics-port"],
        "the operations port: serve GET /metrics (instead of on the main port) and /v2/health/live and "
        "/v2/health/ready on this port of --host, without a key, for scrapers and probes",
        {"type": int, "metavar": "PORT"},
    ),
    "grpc_port": (
        ["--grpc-port"],
        "serve the Open Inference Protocol over gRPC on this port of --host too (needs the [grpc] extra)",
        {"type": int, "metavar": "PORT"},
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelapi", description="Serve trained models as a JSON web API.")
    parser.add_argument("--version", action="version", version=f"modelapi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve models over HTTP", description="Serve models over HTTP.")
    serve.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="model repository directory (DIR/<name>/<version>/<file>), model file (.skops, .onnx, .joblib/.pkl "
        "with trust), MLflow directory, or module:Class; none serves the bundled iris demo model",
    )
    for dest, (flags, text, extra) in _SERVE_FLAGS.items():
        serve.add_argument(*flags, dest=dest, help=text, default=argparse.SUPPRESS, **extra)

    inspect = sub.add_parser("inspect", help="print what would be served, without serving it")
    inspect.add_argument("model", metavar="MODEL")
    inspect.add_argument("--name", dest="names", action="append", default=argparse.SUPPRESS)
    inspect.add_argument("--trust-pickle", dest="trust_pickle", action="store_true", default=argparse.SUPPRESS)
    inspect.add_argument("--sha256", dest="sha256", action="append", default=argparse.SUPPRESS, metavar="HEX")
    inspect.add_argument("--device", dest="device", default=argparse.SUPPRESS, help="cpu (default), cuda or cuda:N")
    inspect.add_argument("--json", dest="json", action="store_true", help="print one JSON object per model")
    add_commands(sub, _SERVE_FLAGS)
    add_keys_command(sub)
    add_deploy_command(sub)
    add_monitor_command(sub)
    return parser


def _settings(args: argparse.Namespace, models: list[str]) -> Any:
    from .settings import Settings

    # the serve flags (the worker shares some by dest), and the worker's own settings (its --metrics-port)
    overrides = {k: v for k, v in vars(args).items() if k in _SERVE_FLAGS or k in WORKER_PORT_FLAGS}
    if models:
        overrides["models"] = models
    return Settings(**overrides)


def _setting_error(err: Any) -> str:
    """One of pydantic's errors as a line: ``setting: message``. A check across settings (``--tls-cert`` without
    ``--tls-key``, ``--auth off`` on a public address) has no setting to name and its message names the flags;
    a check of ours says its own message, without pydantic's ``Value error, `` in front."""
    ctx = err.get("ctx") or {}
    message = str(ctx["error"]) if err["type"] == "value_error" and "error" in ctx else str(err["msg"])
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {message}" if where else message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse ends a positional list at the first option: predict MODEL --model NAME a=1 leaves a=1
        if args.command == "predict" and all("=" in a and not a.startswith("-") for a in extra):
            args.models += extra
        else:
            parser.parse_args(argv)  # argparse's own message for what it does not know (exits 2)
    try:
        if args.command == "serve":
            from .server import run

            run(_settings(args, list(args.models)))
            return 0
        if args.command in ("predict", "worker"):
            return run_command(args, _settings)
        if args.command == "keys":
            return run_keys(args)
        if args.command == "deploy":
            return run_deploy(args)
        if args.command == "monitor":
            return run_monitor(args)
        return _inspect(_settings(args, [args.model]), as_json=getattr(args, "json", False))
    except ValidationError as exc:
        for err in exc.errors():
            print(f"modelapi: error: {_setting_error(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a socket's, say: an error like any other
            print(f"modelapi: error: {exc}", file=sys.stderr)
            return 2
        # the reader of the output went away (`modelapi keys list | head -1`): stop quietly, as a command that
        # SIGPIPE ends does, and let nothing more be written to the closed pipe (Python flushes stdout at exit)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"modelapi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has closed it (polling its write end reports an error)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _inspect(settings: Any, *, as_json: bool = False) -> int:
    from .inspect import render
    from .repository.sources import read_models

    models, problems = read_models(settings)
    sys.stdout.write(render(models, as_json=as_json))
    for problem in problems:
        print(f"modelapi: error: {problem}", file=sys.stderr)
    return 1 if problems else 0
