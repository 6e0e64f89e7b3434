"""The key store: what is stored, what authenticates, and the same on PostgreSQL shared by two replicas."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.services import postgres_schema
from modelapi.security.keys import KEY_PATTERN, InvalidKey, KeyStore, hash_key, parse_expiry, sqlite_path


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    if request.param == "sqlite":
        yield tmp_path / "state", None
    else:
        with postgres_schema() as url:
            yield tmp_path / "state", url


def test_a_key_is_high_entropy_prefixed_and_stored_only_as_its_hash(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, None)
    key, record = store.create("alice")
    store.close()
    match = KEY_PATTERN.match(key)
    assert match is not None and match.group(1) == record.key_id and len(match.group(2)) == 64  # 256 bits
    raw = sqlite_path(tmp_path).read_bytes()
    for path in tmp_path.glob("keys.db*"):
        raw += path.read_bytes()
    secret = match.group(2)
    assert secret.encode() not in raw and key.encode() not in raw
    with sqlite3.connect(sqlite_path(tmp_path)) as db:
        assert db.execute("SELECT key_hash FROM modelapi_api_keys").fetchall() == [(hash_key(key),)]
    assert sqlite_path(tmp_path).stat().st_mode & 0o077 == 0  # owner only
    other, _ = KeyStore.open(tmp_path, None).create("alice")
    assert other != key


def test_authenticate_every_outcome(store_url: tuple[Path, str | None]) -> None:
    store = KeyStore.open(*store_url)
    try:
        key, record = store.create("svc", frozenset({"predict"}), frozenset({"iris"}), time.time() + 60)
        principal = store.authenticate(key)
        assert (principal.key_id, principal.name, principal.scopes, principal.models) == (
            record.key_id, "svc", frozenset({"predict"}), frozenset({"iris"}),
        )  # fmt: skip
        wrong_secret = key[:-1] + ("0" if key[-1] != "0" else "1")
        unknown_id = "mk_00000000_" + key.split("_")[2]
        cases = {"mk_short": "malformed", wrong_secret: "not valid", unknown_id: "not valid", key.upper(): "malformed"}
        for bad, words in cases.items():
            with pytest.raises(InvalidKey, match=words):
                store.authenticate(bad)
        with pytest.raises(InvalidKey, match=f"mk_{record.key_id} is expired"):
            store.authenticate(key, now=time.time() + 61)
        store.revoke(f"mk_{record.key_id}")
        with pytest.raises(InvalidKey, match=f"mk_{record.key_id} is revoked"):
            store.authenticate(key)
        assert store.revoke(key).state(time.time()) == "revoked"  # by the whole key, twice: harmless
        with pytest.raises(ValueError, match="no key with id"):
            store.revoke("deadbeef" if record.key_id != "deadbeef" else "beefdead")
        with pytest.raises(ValueError, match="not a key id"):
            store.revoke("bob")
        assert [r.key_id for r in store.list()] == [record.key_id]
    finally:
        store.close()


def test_a_revocation_reaches_another_replica_on_its_next_lookup(store_url: tuple[Path, str | None]) -> None:
    one, two = KeyStore.open(*store_url), KeyStore.open(*store_url)  # two servers sharing one store
    try:
        key, record = one.create("shared")
        assert two.authenticate(key).key_id == record.key_id
        one.revoke(record.key_id)
        with pytest.raises(InvalidKey, match="revoked"):
            two.authenticate(key)
    finally:
        one.close()
        two.close()


def test_existing_never_creates_a_store(tmp_path: Path) -> None:
    assert KeyStore.existing(tmp_path / "state", None) is None
    assert not (tmp_path / "state").exists()
    store = KeyStore.open(tmp_path / "state", None)
    assert not store.has_keys()
    store.create("k")
    assert store.has_keys()
    store.close()
    found = KeyStore.existing(tmp_path / "state", None)
    assert found is not None and found.has_keys()
    found.close()


def test_create_refuses_bad_names_and_scopes(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, None)
    with pytest.raises(ValueError, match="--name"):
        store.create("  ")
    with pytest.raises(ValueError, match="--scope: expected one of predict, admin, got root"):
        store.create("x", frozenset({"root"}))
    store.close()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1209600), ("45s", 45)]
)
def test_parse_expiry_durations(text: str, seconds: int) -> None:
    assert parse_expiry(text, now=1000.0) == 1000.0 + seconds


def test_parse_expiry_dates_and_mistakes() -> None:
    assert parse_expiry("2030-01-01", now=0) == 1893456000.0
    assert parse_expiry("2030-01-01T01:00:00+01:00", now=0) == 1893456000.0
    for bad, words in [("0d", "future"), ("2001-01-01", "past"), ("soon", "expected a duration")]:
        with pytest.raises(ValueError, match=words):
            parse_expiry(bad, now=time.time())
