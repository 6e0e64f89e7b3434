"""The shared SQLite setup of the jobs database and the key store."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text

from helpers.services import postgres_schema, require_postgres
from modelapi.db import create_sqlite_file, make_engine
from modelapi.jobs.store import JobStore, sqlite_url
from modelapi.security.keys import KeyStore


def test_sqlite_connections_use_wal_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.db"
    create_sqlite_file(path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        engine.dispose()


def test_the_file_and_its_directory_are_for_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.db"
    create_sqlite_file(path)
    assert path.stat().st_size == 0
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    path.write_bytes(b"kept")
    create_sqlite_file(path)  # an existing file is left alone
    assert path.read_bytes() == b"kept"


def test_server_databases_ping_only_when_asked() -> None:
    url = "postgresql+psycopg://user@127.0.0.1:1/db"  # never connected to
    assert make_engine(url, pool_pre_ping=True).pool._pre_ping
    assert not make_engine(url).pool._pre_ping


def test_both_stores_use_it(tmp_path: Path) -> None:
    jobs = JobStore(sqlite_url(tmp_path))
    keys = KeyStore.open(tmp_path / "keys", None)
    try:
        for engine in (jobs.engine, keys.engine):
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        jobs.close()
        keys.close()
    assert (tmp_path / "keys" / "keys.db").stat().st_mode & 0o777 == 0o600


def test_stores_created_at_once_by_several_processes_all_open() -> None:
    """Replicas and job workers start together on one PostgreSQL database: each finds the tables missing and
    creates them at the same moment; every one must open (one losing the race crashed a worker at start)."""
    require_postgres()
    for store in (JobStore, lambda url: KeyStore(url)):
        for _ in range(3):  # the race is a matter of timing: a few fresh schemas
            with postgres_schema() as url:
                barrier = threading.Barrier(6)
                errors: list[BaseException] = []

                def open_store(
                    url: str = url,
                    store: Any = store,
                    barrier: threading.Barrier = barrier,
                    errors: list[BaseException] = errors,
                ) -> None:
                    barrier.wait()
                    try:
                        store(url).close()
                    except BaseException as exc:
                        errors.append(exc)

                threads = [threading.Thread(target=open_store) for _ in range(6)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                assert errors == []
