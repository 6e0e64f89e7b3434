"""The real PostgreSQL and Redis of the development and CI machines: skip where absent, fail in CI (CI=true)."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

PG_HOST, PG_PORT, REDIS_PORT = "127.0.0.1", 5432, 6379
PG_BASE = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test"


def _require(what: str, port: int, how: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required in CI at 127.0.0.1:{port} ({how})")
        pytest.skip(f"{what} is not running at 127.0.0.1:{port}; {how}")


def require_postgres() -> None:
    _require("PostgreSQL", PG_PORT, ".ci/run starts it; locally: pg_ctlcluster <version> main start")


def require_redis() -> None:
    _require("Redis", REDIS_PORT, ".ci/run starts it; locally: redis-server --daemonize yes")


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A SQLAlchemy URL whose tables live in a fresh schema of database ``test``, dropped afterwards."""
    require_postgres()
    from sqlalchemy import create_engine, text

    schema = f"modelapi_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def redis_url() -> str:
    require_redis()
    return f"redis://127.0.0.1:{REDIS_PORT}/0"
