"""``modelapi keys create | list | update | revoke``: manage the API keys in the key store.

The store is the one the server reads: SQLite in ``--state-dir`` (``MODELAPI_STATE_DIR``, default the per-user
data directory), or the database at ``--database-url`` (``MODELAPI_DATABASE_URL``) shared by replicas.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from .. import jsonutil
from .key_limits import SYNTAX, parse_limits
from .keys import SCOPES, KeyStore, parse_expiry


def add_keys_command(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="create, list, update and revoke API keys",
        description="Manage API keys. Servers look a key up again at most key_cache_s (0.5 s) after they last "
        "did: a revoked key stops working within that, on every worker and replica, without a restart.",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)

    def store_flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--state-dir", dest="state_dir", type=Path, default=argparse.SUPPRESS,
            help="directory of the SQLite key store (default: per-user data dir; env MODELAPI_STATE_DIR)",
        )  # fmt: skip
        parser.add_argument(
            "--database-url", dest="database_url", metavar="URL", default=argparse.SUPPRESS,
            help="SQLAlchemy URL of a shared key store, e.g. postgresql+psycopg://... (env MODELAPI_DATABASE_URL)",
        )  # fmt: skip

    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who or what uses the key (shown by `keys list`)")
    create.add_argument("--scope", choices=SCOPES, default="predict", help="predict (default) or admin")
    create.add_argument("--models", metavar="A,B", help="the only models the key may use (default: all)")
    create.add_argument("--expires", metavar="WHEN", help="e.g. 30d, 12h, 2w, or an ISO date (default: never)")
    create.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    limit_flags(create)
    store_flags(create)

    listing = actions.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    store_flags(listing)

    change = actions.add_parser(
        "update",
        help="replace a key's rate limits and quotas",
        description="Replace a key's rate limits and quotas with those given (--no-limits: none). Servers read "
        "keys again at most key_cache_s (0.5 s) apart, so the new limits apply within that, on every worker and "
        "replica.",
    )
    change.add_argument("key_id", metavar="ID", help="the key's id as `keys list` shows it (mk_1a2b3c4d)")
    limit_flags(change)
    change.add_argument("--no-limits", action="store_true", help="remove every rate limit and quota of the key")
    store_flags(change)

    revoke = actions.add_parser("revoke", help="revoke a key: it stops working within key_cache_s (0.5 s)")
    revoke.add_argument("key_id", metavar="ID", help="the key's id as `keys list` shows it (mk_1a2b3c4d)")
    store_flags(revoke)


def limit_flags(parser: argparse.ArgumentParser) -> None:
    """``--rate`` and ``--quota``: one syntax, both repeatable; a key may carry one limit per unit and window."""
    for flag, example in (("--rate", "6000/min"), ("--quota", "1000000rows/day")):
        parser.add_argument(
            flag, dest="limits", action="append", metavar="LIMIT", type=_tagged(flag), default=[],
            help=f"a limit on the key, {SYNTAX} (e.g. {flag} {example}); repeat for more. Shared by every "
            "worker and replica with the server's --redis-url, else per worker process (docs/security.md)",
        )  # fmt: skip


def _tagged(flag: str) -> Callable[[str], tuple[str, str]]:
    """The flag's value with the flag's name, so that an error names the flag it came from."""
    return lambda value: (flag, value)


def run_keys(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..settings import Settings

    out = out or sys.stdout

    settings = Settings(**{k: v for k, v in vars(args).items() if k in ("state_dir", "database_url")})
    try:
        return _run(args, KeyStore.open(settings.state_dir, settings.database_url), out)
    except SQLAlchemyError as exc:  # e.g. PostgreSQL unreachable: say so in one line (without the URL's password)
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise OSError(f"the key store cannot be used: {reason}") from None


def _run(args: argparse.Namespace, store: KeyStore, out: TextIO) -> int:
    try:
        now = time.time()
        if args.keys_command == "create":
            models = None
            if args.models is not None:
                models = frozenset(m.strip() for m in args.models.split(",") if m.strip())
                if not models:
                    raise ValueError("--models: give at least one model name, e.g. --models iris,digits")
            expires = parse_expiry(args.expires, now) if args.expires else None
            key, record = store.create(args.name, frozenset({args.scope}), models, expires, parse_limits(args.limits))
            if args.json:
                out.write(jsonutil.dumps({"key": key, **record.describe(now)}).decode() + "\n")
            else:
                out.write(f"{key}\n")
                print(
                    f"created key mk_{record.key_id} ({record.name}); it is shown only now: store it in a secret "
                    "manager. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                    file=sys.stderr,
                )
        elif args.keys_command == "list":
            for record in store.list():
                info = record.describe(now)
                if args.json:
                    out.write(jsonutil.dumps(info).decode() + "\n")
                else:
                    shown = ",".join(info["models"]) if info["models"] is not None else "*"
                    limits = f"limits={','.join(info['limits'])}  " if info["limits"] else ""
                    out.write(
                        f"{info['id']}  {info['state']:<8} {','.join(info['scopes']):<8} models={shown}  "
                        f"{limits}expires={info['expires'] or 'never'}  {info['name']}\n"
                    )
        elif args.keys_command == "update":
            if args.no_limits == bool(args.limits):
                raise ValueError("keys update: give the new limits (--rate, --quota) or --no-limits")
            record = store.set_limits(args.key_id, parse_limits(args.limits))
            shown = ", ".join(limit.spec for limit in record.limits) or "none"
            out.write(f"updated mk_{record.key_id} ({record.name}): limits {shown}\n")
        else:
            record = store.revoke(args.key_id)
            out.write(f"revoked mk_{record.key_id} ({record.name})\n")
    finally:
        store.close()
    return 0
