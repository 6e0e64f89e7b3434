"""SQLAlchemy engines for the server's own state (jobs, API keys): SQLite in the state directory, or a server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

SQLITE_BUSY_TIMEOUT_S = 30


def create_sqlite_file(path: Path) -> None:
    """Create the SQLite database file (and its directory), both for their owner only, unless they exist."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        path.touch(mode=0o600)  # SQLite gives its -wal and -shm files the same permissions


def make_engine(url: str, *, pool_pre_ping: bool = False) -> Engine:
    """An engine for ``url``; SQLite connections use WAL, full sync and a busy timeout (several processes and
    threads share one file: readers never wait for the writer, and a writer waits for another)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=pool_pre_ping)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut (SQLite's default, made explicit)
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.close()


def create_tables(engine: Engine, metadata: MetaData, attempts: int = 5) -> None:
    """Create ``metadata``'s tables that do not exist. Processes that start together (replicas, workers) may each
    find a table missing and create it at the same moment: on PostgreSQL all but one fail (a unique violation in
    ``pg_type``), and the next check finds the table; so a failure is retried a few times before it counts."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)  # checkfirst
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def add_column(engine: Engine, table: str, column: str, sql_type: str) -> None:
    """Bring a table made by an older release up to date: add a nullable ``column`` unless it is there. Adding a
    nullable column touches no row; two processes starting at once both try, and one finds the column there
    (PostgreSQL's ``IF NOT EXISTS``, SQLite's duplicate-column error)."""
    if column in {c["name"] for c in inspect(engine).get_columns(table)}:
        return
    postgres = engine.dialect.name == "postgresql"
    ddl = f"ALTER TABLE {table} ADD COLUMN {'IF NOT EXISTS ' if postgres else ''}{column} {sql_type}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    except DBAPIError as exc:
        if "duplicate column" not in str(exc).lower():
            raise
