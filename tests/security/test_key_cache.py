"""The key store's cache (``security/key_cache.py``): what a cached key still checks, what it sees late and by
how much, what it never holds. A fake clock stands for the cache's; the request's time is passed as ``now``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.clock import Clock
from helpers.services import postgres_schema
from modelapi.security.key_cache import CachedKey, KeyCache
from modelapi.security.key_limits import Limit
from modelapi.security.keys import InvalidKey, KeyStore, new_key, store_url

TTL = 0.5


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        KeyStore.open(tmp_path, None).close()  # the file, made as the server makes it
        yield store_url(tmp_path, None)
    else:
        with postgres_schema() as found:
            yield found


@pytest.fixture
def clock() -> Clock:
    return Clock()


def server_store(url: str, clock: Clock, max_entries: int = 4096) -> KeyStore:
    """A store as a server opens it: keys cached for TTL seconds of ``clock``."""
    return KeyStore(url, cache=KeyCache(TTL, max_entries, clock))


def test_a_revocation_elsewhere_is_seen_within_the_ttl(url: str, clock: Clock) -> None:
    cli, server = KeyStore(url), server_store(url, clock)  # `modelapi keys` and a server (or another replica)
    try:
        key, record = cli.create("a")
        assert server.authenticate(key).key_id == record.key_id
        cli.revoke(record.key_id)
        clock.now += TTL * 0.9
        assert server.authenticate(key).key_id == record.key_id  # the lookup is still trusted
        clock.now += TTL * 0.1
        with pytest.raises(InvalidKey, match="revoked"):
            server.authenticate(key)
        with pytest.raises(InvalidKey, match="revoked"):  # and a revoked key that exists is cached too
            server.cached(key)
    finally:
        cli.close()
        server.close()


def test_the_ttl_counts_from_the_start_of_a_slow_lookup(
    url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup that read the record and then took long to return (a slow network, a busy worker thread) is
    trusted TTL seconds from its start, not from its end: a revocation just after the read is still seen within
    the TTL."""
    cli, server = KeyStore(url), server_store(url, clock)
    try:
        key, record = cli.create("a")
        get = server.get

        def slow_get(key_id: str) -> object:
            found = get(key_id)
            clock.now += TTL * 0.8  # the answer arrives late
            return found

        monkeypatch.setattr(server, "get", slow_get)
        assert server.authenticate(key).key_id == record.key_id
        cli.revoke(record.key_id)
        clock.now += TTL * 0.2  # TTL after the read began
        with pytest.raises(InvalidKey, match="revoked"):
            server.authenticate(key)
    finally:
        cli.close()
        server.close()


def test_a_revocation_through_the_same_store_is_seen_at_once(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        key, record = server.create("a")
        assert server.authenticate(key).key_id == record.key_id
        assert record.key_id in server.cache
        server.revoke(record.key_id)
        with pytest.raises(InvalidKey, match="revoked"):
            server.authenticate(key)
    finally:
        server.close()


def test_expiry_is_checked_at_the_request_time_not_the_lookup_time(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        t = time.time()
        key, _ = server.create("a", expires_at=t + 10)
        assert server.authenticate(key, t).name == "a"
        assert server.cached(key, t + 9.9) is not None
        with pytest.raises(InvalidKey, match="expired"):
            server.authenticate(key, t + 10)  # cached (the cache's clock did not move), and expired
        with pytest.raises(InvalidKey, match="expired"):
            server.cached(key, t + 10)
    finally:
        server.close()


def test_changed_limits_and_models_are_seen_within_the_ttl(url: str, clock: Clock) -> None:
    cli, server = KeyStore(url), server_store(url, clock)
    try:
        key, record = cli.create("a", models=frozenset({"iris"}), limits=(Limit("requests", 10, 60),))
        assert server.authenticate(key).limits == (Limit("requests", 10, 60),)
        cli.set_limits(record.key_id, (Limit("requests", 5, 1),))
        assert server.authenticate(key).limits == (Limit("requests", 10, 60),)
        clock.now += TTL
        assert server.authenticate(key).limits == (Limit("requests", 5, 1),)
        server.set_limits(record.key_id, ())  # through the store itself: at once
        assert server.authenticate(key).limits == ()
    finally:
        cli.close()
        server.close()


def test_a_wrong_secret_for_a_cached_id_is_refused(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        key, record = server.create("a")
        server.authenticate(key)
        forged = key[:-4] + ("0000" if not key.endswith("0000") else "1111")
        for check in (server.authenticate, server.cached):
            with pytest.raises(InvalidKey, match="not valid"):
                check(forged)
        assert server.authenticate(key).key_id == record.key_id
    finally:
        server.close()


def test_a_malformed_key_naming_a_cached_id_is_refused_as_malformed(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        key, record = server.create("a")
        server.authenticate(key)  # cached now: each key below carries its id where a well-formed key does
        secret = key[12:]
        for bad in ("xx" + key[2:], key + "0", key[:-1], key[:12] + "\u00e9" + secret[1:], key[:12] + "g" + secret[1:]):
            for check in (server.authenticate, server.cached):
                with pytest.raises(InvalidKey, match="malformed"):
                    check(bad)
        assert server.authenticate(key).key_id == record.key_id
    finally:
        server.close()


def test_unknown_ids_are_never_cached(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        for _ in range(50):
            _, key = new_key()
            with pytest.raises(InvalidKey, match="not valid"):
                server.authenticate(key)
            assert server.cached(key) is None  # not cached: looked up (and compared) every time
        assert len(server.cache) == 0
    finally:
        server.close()


def test_the_cache_is_bounded_oldest_lookup_first(url: str, clock: Clock) -> None:
    server = server_store(url, clock, max_entries=3)
    try:
        keys = [server.create(f"k{i}")[0] for i in range(5)]
        for key in keys:
            server.authenticate(key)
        assert len(server.cache) == 3
        assert [server.cached(k) is not None for k in keys] == [False, False, True, True, True]
        assert all(server.authenticate(k).name == f"k{i}" for i, k in enumerate(keys))  # evicted: looked up again
        assert len(server.cache) == 3
    finally:
        server.close()


def test_no_cache_looks_every_request_up(url: str) -> None:
    cli, server = KeyStore(url), KeyStore(url, cache_s=0)
    try:
        key, record = cli.create("a")
        assert server.authenticate(key).key_id == record.key_id
        assert len(server.cache) == 0 and server.cached(key) is None
        cli.revoke(record.key_id)
        with pytest.raises(InvalidKey, match="revoked"):
            server.authenticate(key)
    finally:
        cli.close()
        server.close()


def test_cache_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        KeyCache(-1)
    with pytest.raises(ValueError, match="max_entries"):
        KeyCache(1, 0)


def test_a_cached_id_with_a_wrong_secret_is_refused_and_no_presented_key_is_kept(url: str, clock: Clock) -> None:
    server = server_store(url, clock)
    try:
        key, record = server.create("a")
        forged = key[:-4] + ("0000" if not key.endswith("0000") else "1111")
        assert server.authenticate(key).key_id == record.key_id  # cached now
        with pytest.raises(InvalidKey, match="not valid"):
            server.authenticate(forged)
        entry = server.cache.get(record.key_id)
        assert entry is not None
        kept = [getattr(entry, name) for name in type(entry).__slots__]
        assert key not in kept and forged not in kept  # the record holds the hash only
        server.revoke(record.key_id)
        assert server.cache.get(record.key_id) is None
    finally:
        server.close()


def test_a_stored_hash_is_compared_as_its_text_was(url: str, clock: Clock) -> None:
    """The cache compares a presented key's digest with the stored hash's bytes: a stored hash that is not lowercase
    hex (a damaged row) matches no key, as its text matched no ``hexdigest``."""
    server = server_store(url, clock)
    try:
        key, record = server.create("a")
        assert CachedKey(record, 0.0).digest == bytes.fromhex(record.key_hash)
        assert CachedKey(replace(record, key_hash=record.key_hash.upper()), 0.0).digest == b""
        assert server.authenticate(key).key_id == record.key_id  # and the cached path answers
        assert server.authenticate(key).key_id == record.key_id
    finally:
        server.close()
