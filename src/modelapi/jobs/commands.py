"""The ``predict`` and ``worker`` subcommands' arguments (kept light: the job machinery loads only when used).

``predict`` scores a file as a job (``--input``, ``--output``), or one record given as ``NAME=VALUE``
arguments (``client/command.py``), on a server (``--url``) or in this process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: flags of ``serve`` that ``worker`` and ``predict`` share (their dests, as in cli._SERVE_FLAGS)
SHARED = (
    "names",
    "trust_pickle",
    "sha256",
    "max_rows",
    "log_level",
    "log_format",
    "state_dir",
    "database_url",
    "redis_url",
)
WORKER_ONLY = ("job_queue",)
#: flags ``worker`` shares with ``serve`` by dest, with the worker's own help: the worker serves only its
#: operations port (metrics and health), on --host
WORKER_PORT_FLAGS: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    "host": (["--host"], "address --metrics-port listens on (default 127.0.0.1: this machine only)", {}),
    # a setting of its own (MODELAPI_WORKER_METRICS_PORT), not the server's metrics_port: a worker started with a
    # server's environment (MODELAPI_METRICS_PORT set) would otherwise try to take the server's port
    "worker_metrics_port": (
        ["--metrics-port"],
        "serve this worker's own GET /metrics (the jobs it ran, its models, its process) and /v2/health/live "
        "and /v2/health/ready on this port of --host, without a key; scrape every worker (0 picks a free port)",
        {"type": int, "metavar": "PORT"},
    ),
}

JOB_FLAGS: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    "state_dir": (
        ["--state-dir"],
        "directory of the jobs database, the key store and the prediction log (default: per-user data dir)",
        {"type": Path},
    ),
    "database_url": (
        ["--database-url"],
        "SQLAlchemy URL of the database replicas share: jobs, API keys, the prediction log (default: in the state "
        "dir, SQLite and the log's Parquet files)",
        {"metavar": "URL"},
    ),
    "redis_url": (
        ["--redis-url"],
        "Redis URL: send jobs to `modelapi worker` processes via RQ, and share API keys' rate "
        "limits and quotas across workers and replicas (docs/security.md)",
        {"metavar": "URL"},
    ),
    "job_workers": (["--job-workers"], "in-process job workers (default 1; without --redis-url)", {"type": int}),
    "job_queue": (["--queue"], "RQ queue name (default modelapi-jobs)", {}),
}


def add_commands(sub: Any, serve_flags: dict[str, tuple[list[str], str, dict[str, Any]]]) -> None:
    """Add ``predict`` and ``worker``; ``serve_flags`` is cli._SERVE_FLAGS (which includes JOB_FLAGS)."""

    def shared(parser: argparse.ArgumentParser, dests: tuple[str, ...]) -> None:
        for dest in dests:
            flags, text, extra = serve_flags[dest]
            parser.add_argument(*flags, dest=dest, help=text, default=argparse.SUPPRESS, **extra)

    predict = sub.add_parser(
        "predict",
        help="score a file as a job, or one record given as NAME=VALUE, on a server (--url) or in this process",
        description="Score a CSV, JSON, JSON Lines or Parquet file (--input, --output; the output's suffix picks "
        "its format), or one record: modelapi predict --model iris --url URL sepal_length=5.1 sepal_width=3.5 ...",
    )
    predict.add_argument(
        "models",
        nargs="*",
        metavar="MODEL|NAME=VALUE",
        help="models to load when running in process; NAME=VALUE: a field of the one record to predict",
    )
    predict.add_argument("--model", dest="job_model", required=True, metavar="NAME", help="the model to run")
    predict.add_argument("--input", dest="job_input", type=Path, metavar="FILE", help="the file to score as a job")
    predict.add_argument("--output", dest="job_output", type=Path, metavar="FILE", help="where the job's result goes")
    predict.add_argument("--json", dest="json", action="store_true", help="one record: print the answer as JSON")
    predict.add_argument("--url", dest="job_url", metavar="URL", help="a modelapi server (default: run in process)")
    predict.add_argument("--api-key", dest="api_key", default=argparse.SUPPRESS, help="API key for --url")
    shared(predict, ("names", "trust_pickle", "sha256", "max_rows", "log_level"))

    worker = sub.add_parser(
        "worker",
        help="run jobs from Redis (RQ) with the given models",
        description="An RQ worker: loads the models, then runs jobs that servers with --redis-url send.",
    )
    worker.add_argument("models", nargs="*", metavar="MODEL", help="the models the servers serve (default: demo)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    shared(worker, (*SHARED, *WORKER_ONLY))
    for dest, (flags, text, extra) in WORKER_PORT_FLAGS.items():
        worker.add_argument(*flags, dest=dest, help=text, default=argparse.SUPPRESS, **extra)


def run_command(args: argparse.Namespace, settings_for: Callable[[argparse.Namespace, list[str]], Any]) -> int:
    fields = [a for a in args.models if "=" in a] if args.command == "predict" else []
    models = [a for a in args.models if a not in fields]
    settings = settings_for(args, models)
    if args.command == "predict" and (fields or (args.job_input is None and args.job_output is None)):
        if args.job_input is not None or args.job_output is not None:
            raise ValueError("give either NAME=VALUE fields for one record, or --input and --output files, not both")
        from ..client.command import predict_record

        return predict_record(
            settings,
            args.job_model,
            fields,
            url=args.job_url,
            api_key=getattr(args, "api_key", None) or settings.api_key,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "predict" and (args.job_input is None or args.job_output is None):
        raise ValueError("--input and --output go together: the file to score and where its result goes")
    if args.command == "worker":
        from ..worker import run_worker

        run_worker(settings, burst=args.burst)
        return 0
    from .client import run_predict

    return run_predict(
        settings,
        args.job_model,
        args.job_input,
        args.job_output,
        url=args.job_url,
        api_key=getattr(args, "api_key", None) or settings.api_key,
        err=sys.stderr,
    )
