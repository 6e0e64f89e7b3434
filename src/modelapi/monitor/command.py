"""``modelapi monitor MODEL [--since 7d] [--state-dir DIR | --database-url URL] [--html report.html]``: the drift
of a model's prediction log, read where the server wrote it, as an HTML report or as JSON on stdout."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from .. import jsonutil

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def add_monitor_command(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="drift of a model's prediction log: an HTML report or JSON",
        description="Read a model's prediction log (docs/monitoring.md) and report drift against its reference.",
    )
    p.add_argument("model", metavar="MODEL", help="the model's name")
    p.add_argument("--since", type=duration, default=7 * 86400, help="the window: rows logged since (default 7d)")
    p.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS, help="the server's state directory")
    p.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS, help="the server's database")
    p.add_argument(
        "--reference",
        dest="reference",
        action="append",
        default=argparse.SUPPRESS,
        help="training data (.parquet or .csv) to compare against instead of the reference the log keeps",
    )
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report here (else JSON to stdout)")


def run_monitor(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _run(args)
    except SQLAlchemyError as exc:  # e.g. PostgreSQL unreachable: one line (without the URL's password), as keys
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise OSError(f"the prediction log's database cannot be used: {reason}") from None


def _run(args: argparse.Namespace) -> int:
    from ..settings import Settings
    from .service import Monitor

    overrides = {k: getattr(args, k) for k in ("state_dir", "database_url", "reference") if hasattr(args, k)}
    # read only: the reference it builds (from --reference, or the first logged rows) is not saved over the
    # server's
    monitor = Monitor.from_settings(Settings(**overrides), read_only=True)
    try:
        if args.model not in monitor.store.models():
            where = "the database" if monitor.settings.database_url else str(monitor.settings.state_dir)
            print(f"modelapi: error: no prediction log of model {args.model!r} in {where}", file=sys.stderr)
            return 1
        now = time.time()
        since = now - args.since
        if args.html:
            from .report import render

            Path(args.html).write_text(render(monitor, args.model, since, now), encoding="utf-8")
            print(f"modelapi: wrote {args.html}", file=sys.stderr)
        else:
            sys.stdout.write(jsonutil.dumps(monitor.status(args.model, since=since, now=now)).decode() + "\n")
    finally:
        monitor.store.close()
    return 0
