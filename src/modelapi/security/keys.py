"""API keys: generation, hashing and the key store (SQLite in the state directory, or PostgreSQL).

A key reads ``mk_<id>_<secret>``: ``id`` is 8 hex digits, not secret, the store's primary key and what logs
and ``modelapi keys list`` show; ``secret`` is 256 random bits as 64 hex digits. The store keeps only
SHA-256 of the whole key. A 256-bit random secret cannot be guessed or brute-forced from its hash, so a slow
password hash or a server-side pepper would add cost and operational burden (a pepper must reach every
replica) without adding protection; see docs/security.md. Comparison is constant-time (``hmac.compare_digest``).

A request's key is looked up (one primary-key ``SELECT``) unless the store looked it up less than ``cache_s``
seconds ago (``key_cache.py``; the server's ``key_cache_s``, 0.5 s by default): a revocation, or a change of a
key's limits or models, reaches every worker and every replica sharing the database within that time, without
a restart; made through this store object, at once. The hash comparison and the expiry check run on every
request, cached or not. Statements are SQLAlchemy Core with bound parameters only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..db import add_column, create_sqlite_file, create_tables, make_engine
from .key_cache import CachedKey, KeyCache
from .key_limits import Limit, from_json, to_json
from .principal import Principal

PREFIX = "mk_"
SCOPES = ("predict", "admin")
KEY_PATTERN = re.compile(r"^mk_([0-9a-f]{8})_([0-9a-f]{64})$")
ID_PATTERN = re.compile(r"^(?:mk_)?([0-9a-f]{8})(?:_.*)?$")

metadata = MetaData()
api_keys = Table(
    "modelapi_api_keys",
    metadata,
    Column("key_id", String(8), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("models", Text, nullable=True),  # JSON list; NULL: every model
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("limits", Text, nullable=True),  # JSON list of rate limits and quotas (key_limits.py); NULL: none
)


#: the per-request lookup, built once (SQLAlchemy then reuses its compiled form); the id is a bound parameter
_BY_ID = select(api_keys).where(api_keys.c.key_id == bindparam("key_id"))


class InvalidKey(ValueError):
    """A key that does not authenticate; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    key_hash: str
    scopes: frozenset[str]
    models: frozenset[str] | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    limits: tuple[Limit, ...] = ()

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(self.key_id, self.name, self.scopes, self.models, self.limits)

    def describe(self, now: float) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the hash."""
        return {
            "id": f"{PREFIX}{self.key_id}",
            "name": self.name,
            "scopes": sorted(self.scopes),
            "models": sorted(self.models) if self.models is not None else None,
            "created": _iso(self.created_at),
            "expires": _iso(self.expires_at),
            "revoked": _iso(self.revoked_at),
            "state": self.state(now),
            "limits": [limit.spec for limit in self.limits],
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


_sha256 = hashlib.sha256


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``."""
    key_id = secrets.token_hex(4)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_hex(32)}"


def parse_expiry(text: str, now: float | None = None) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` from now, or an ISO date/time (UTC unless it says otherwise)."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match:
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        value = float(int(match.group(1)) * seconds)
        if value <= 0:
            raise ValueError(f"--expires {text!r}: must be in the future")
        return now + value
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--expires {text!r}: expected a duration such as 30d, 12h, 90m, 2w, or an ISO date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if stamp <= now:
        raise ValueError(f"--expires {text!r}: that is in the past")
    return stamp


def sqlite_path(state_dir: Path) -> Path:
    return state_dir / "keys.db"


def store_url(state_dir: Path, database_url: str | None) -> str:
    return database_url or f"sqlite:///{sqlite_path(state_dir)}"


class KeyStore:
    """``cache_s``: seconds a looked-up key is trusted before it is looked up again (0: every request); a tool
    that writes the store (``modelapi keys``) needs none, a server takes its ``key_cache_s``."""

    def __init__(self, url: str, *, create: bool = True, cache_s: float = 0.0, cache: KeyCache | None = None) -> None:
        self.url = url
        self.cache = cache if cache is not None else KeyCache(cache_s)
        self.engine = make_engine(url)  # no pre-ping: lookups retry on a dropped connection themselves
        if create:
            create_tables(self.engine, metadata)  # replicas may start together
            self._migrate()
        self._sqlite = threading.local() if url.startswith("sqlite") else None
        self._raw: list[Any] = []
        compiled = _BY_ID.compile(dialect=self.engine.dialect)
        assert compiled.positional or self._sqlite is None  # SQLite's paramstyle is qmark
        self._by_id_sql = str(compiled)

    @classmethod
    def open(cls, state_dir: Path, database_url: str | None, *, cache_s: float = 0.0) -> KeyStore:
        """The store for these settings, created if needed (the SQLite file readable by its owner only)."""
        if database_url is None:
            create_sqlite_file(sqlite_path(state_dir))
        return cls(store_url(state_dir, database_url), cache_s=cache_s)

    @classmethod
    def existing(cls, state_dir: Path, database_url: str | None, *, cache_s: float = 0.0) -> KeyStore | None:
        """The store if it exists already (never creates a file or a table), else ``None``."""
        if database_url is None and not sqlite_path(state_dir).exists():
            return None
        store = cls(store_url(state_dir, database_url), create=False, cache_s=cache_s)
        if not inspect(store.engine).has_table(api_keys.name):
            store.close()
            return None
        store._migrate()
        return store

    def _migrate(self) -> None:
        """Bring a store made by an older release up to date: add the ``limits`` column (NULL: no limits)."""
        add_column(self.engine, api_keys.name, "limits", "TEXT")

    def close(self) -> None:
        self.cache.clear()
        for conn in self._raw:
            conn.close()
        self._raw.clear()
        self.engine.dispose()

    # writing ---------------------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        scopes: frozenset[str] = frozenset({"predict"}),
        models: frozenset[str] | None = None,
        expires_at: float | None = None,
        limits: tuple[Limit, ...] = (),
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(key, record)``. The key is returned once and stored only as its hash."""
        if not name.strip():
            raise ValueError("--name: give the key a name that says who or what uses it")
        unknown = scopes - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(
                f"--scope: expected one of {', '.join(SCOPES)}, got {', '.join(sorted(unknown)) or 'none'}"
            )
        for _ in range(10):  # 8 hex digits: a collision is rare, and only costs a retry
            key_id, key = new_key()
            values = {
                "key_id": key_id,
                "name": name.strip(),
                "key_hash": hash_key(key),
                "scopes": " ".join(sorted(scopes)),
                "models": json.dumps(sorted(models)) if models is not None else None,
                "created_at": time.time(),
                "expires_at": expires_at,
                "revoked_at": None,
                "limits": to_json(limits),
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(api_keys).values(**values))
            except IntegrityError:
                continue
            record = self.get(key_id)
            assert record is not None
            return key, record
        raise RuntimeError("could not find a free key id")  # pragma: no cover

    def set_limits(self, key_id: str, limits: tuple[Limit, ...]) -> KeyRecord:
        """Replace a key's rate limits and quotas (``()``: none); every server applies them within its
        ``key_cache_s`` (this store at once)."""
        ident = _ident(key_id)
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.key_id == ident).values(limits=to_json(limits)))
        self.cache.drop(ident)
        record = self.get(ident)
        if record is None:
            raise ValueError(f"no key with id mk_{ident}")
        return record

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke by id (``1a2b3c4d``, ``mk_1a2b3c4d``, or the whole key). Revoking twice is harmless."""
        ident = _ident(key_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == ident, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        self.cache.drop(ident)
        record = self.get(ident)
        if record is None:
            raise ValueError(f"no key with id mk_{ident}")
        return record

    # reading ---------------------------------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord | None:
        if self._sqlite is not None:
            return self._sqlite_get(key_id)
        for attempt in (1, 2):  # no pre-ping round trip per request: retry once when a pooled connection died
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(_BY_ID, {"key_id": key_id}).mappings().first()
                break
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        return _record(row) if row else None

    def _sqlite_get(self, key_id: str) -> KeyRecord | None:
        """The per-request lookup on SQLite: the same bound-parameter statement on a per-thread DB-API
        connection, about 15 us instead of about 190 us through SQLAlchemy's pool and result layers."""
        local = self._sqlite
        assert local is not None
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = self.engine.raw_connection()
            self._raw.append(conn)
        cursor = conn.cursor()
        try:
            cursor.execute(self._by_id_sql, (key_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        finally:
            cursor.close()
        return _record(dict(zip(names, row, strict=True))) if row else None

    def list(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
        return [_record(row) for row in rows]

    def has_keys(self) -> bool:
        """Whether any key was ever created (revoked and expired ones count)."""
        with self.engine.connect() as conn:
            return conn.execute(select(api_keys.c.key_id).limit(1)).first() is not None

    def authenticate(self, key: str, now: float | None = None) -> Principal:
        """The principal of ``key``; raises ``InvalidKey`` with a client-safe reason otherwise. Looks the key
        up unless it is cached (``cached``); blocks on a network database."""
        cache = self.cache
        entry = cache.entries.get(key[3:11])  # the id's place in a well-formed key (see _matches)
        # cache.get, _matches and _active, inline: this is every request's path
        if (
            entry is not None
            and cache.clock() < entry.until
            and key.isascii()
            and hmac.compare_digest(entry.digest, _sha256(key.encode()).digest())
        ):
            record = entry.record
            if record.revoked_at is None and record.expires_at is None:
                return entry.principal
            return _active(entry, now)
        return _verify(key, self._entry(_key_id(key)), now)

    def record(self, key_id: str) -> KeyRecord | None:
        """The record of the key with id ``key_id``, as current as a request's (through the cache); ``None`` for
        no such key. No key is presented or checked: this is for what holds a key's id, a job's owner. Blocks
        on a network database (``cached_record`` does not)."""
        entry = self._entry(key_id)
        return None if entry is None else entry.record

    def cached_record(self, key_id: str) -> KeyRecord | None:
        """``record``'s answer while the id is cached, else ``None`` (then ``record`` looks it up)."""
        entry = self.cache.get(key_id)
        return None if entry is None else entry.record

    def _entry(self, key_id: str) -> CachedKey | None:
        entry = self.cache.get(key_id)
        if entry is None:
            read_at = self.cache.clock()  # trusted from before the read: a revocation after it is late by <= ttl
            record = self.get(key_id)
            entry = self.cache.put(record, read_at) if record is not None else None
        return entry

    def cached(self, key: str, now: float | None = None) -> Principal | None:
        """What ``authenticate`` answers when ``key``'s id is cached, without blocking; ``None`` when it is
        not (then ``authenticate`` looks it up): the caller on the event loop goes to a thread only then."""
        entry = self.cache.get(key[3:11])
        if entry is not None and _matches(key, entry):
            return _active(entry, now)
        entry = self.cache.get(_key_id(key))
        return None if entry is None else _verify(key, entry, now)


def _key_id(key: str) -> str:
    match = KEY_PATTERN.match(key)
    if not match:
        raise InvalidKey("the API key is malformed; keys look like mk_<8 hex digits>_<64 hex digits>")
    return match.group(1)


def _verify(key: str, entry: CachedKey | None, now: float | None) -> Principal:
    """``key`` against its id's record (``None``: no such id): its hash compared in constant time whether or not
    the id exists (no presented key is kept, only the store's hashes); then the state at ``now`` (the request's
    time)."""
    expected = entry.record.key_hash if entry is not None else "0" * 64
    if not hmac.compare_digest(expected, hash_key(key)) or entry is None:
        raise InvalidKey("the API key is not valid")
    return _active(entry, now)


def _matches(key: str, entry: CachedKey) -> bool:
    """Whether ``key`` hashes to ``entry``'s stored hash (compared in constant time): the cached key's fast path,
    which skips ``_key_id``'s pattern, since only the well-formed key that was hashed into the store can match
    it. A key that does not match takes the whole path (``_key_id``, ``_verify``), which says why it fails."""
    return key.isascii() and hmac.compare_digest(entry.digest, _sha256(key.encode()).digest())


def _active(entry: CachedKey, now: float | None) -> Principal:
    """``entry``'s principal if its key is active at ``now`` (the request's time; read only for a record with an
    expiry or a revocation date: one with neither is active at any time, while the record is current)."""
    record = entry.record
    if record.revoked_at is not None or record.expires_at is not None:
        state = record.state(time.time() if now is None else now)
        if state != "active":
            raise InvalidKey(f"the API key mk_{record.key_id} is {state}")
    return entry.principal


def _ident(key_id: str) -> str:
    match = ID_PATTERN.match(key_id.strip())
    if not match:
        raise ValueError(f"{key_id!r} is not a key id; expected mk_ and 8 hex digits, as `keys list` shows")
    return match.group(1)


def _record(row: Any) -> KeyRecord:
    models = row["models"]
    return KeyRecord(
        key_id=row["key_id"],
        name=row["name"],
        key_hash=row["key_hash"],
        scopes=frozenset(str(row["scopes"]).split()),
        models=frozenset(json.loads(models)) if models is not None else None,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        limits=from_json(row["limits"]),
    )


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_SECRET_IN_TEXT = re.compile(r"mk_([0-9a-f]{8})_[0-9a-f]{16,}")


def redact(text: str) -> str:
    """``text`` with the secret part of any API key in it replaced; the id stays for log search."""
    return _SECRET_IN_TEXT.sub(r"mk_\1_<redacted>", text)


class RedactKeys(logging.Filter):
    """A log filter that keeps API keys out of log lines, e.g. a key a client put in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
