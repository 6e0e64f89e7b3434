"""The key store's cache: the records of keys looked up in the last ``ttl_s`` seconds, by key id.

A request's key costs a primary-key lookup in the store, its row turned into a ``KeyRecord`` and a
``Principal`` (on SQLite about 100 us of a worker's CPU per request under load, a fifth of a one-row
prediction; on PostgreSQL a network round trip and a thread hop). The cache keeps, for ``ttl_s`` seconds
after a lookup, the record and the principal built from it, so a busy key costs a dictionary lookup instead.

What it does not change (docs/security.md#key-cache):

- the key is still compared in constant time on every request: hashed, and the hash compared with the
  record's (about 0.6 us); the cache holds records, which hold hashes, never a presented key;
- expiry is checked against the request's own time on every request, not the time of the lookup;
- only keys that exist are cached, so random unknown ids neither grow it nor skip the comparison (they are
  looked up every time, as before); at most ``max_entries`` ids are kept, the oldest lookups dropped first;
- a revocation or a change of limits or models made elsewhere (``modelapi keys`` writes the store directly,
  another replica, another worker) is seen at most ``ttl_s`` seconds later; one made through this store
  object drops its entry at once.

Reads take no lock (one ``dict.get``, atomic under the GIL), so the PostgreSQL path can read it from the
event loop and fill it from a worker thread; writes take one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .keys import KeyRecord
    from .principal import Principal

_HEX_HASH = re.compile(r"[0-9a-f]{64}")
#: how long a looked-up key is trusted by default: issue 13 asks that a revoked key be refused by every
#: replica within 1 s, and a lookup made just before the revocation is trusted this long after it
DEFAULT_TTL_S = 0.5
#: ids kept at most: far more keys than one server sees within a TTL, and a few hundred KiB of records
DEFAULT_MAX_ENTRIES = 4096


class CachedKey:
    """A key's record, its principal, and until when (the cache's clock) they may be used; ``digest``: the
    record's hash as bytes, which a presented key's SHA-256 digest is compared with (no hex string made per
    request)."""

    __slots__ = ("digest", "principal", "record", "until")

    def __init__(self, record: KeyRecord, until: float) -> None:
        self.record = record
        self.principal: Principal = record.principal()
        # a stored hash that is not lowercase hex (a damaged row) matches no key, as its text matched no hexdigest
        self.digest = bytes.fromhex(record.key_hash) if _HEX_HASH.fullmatch(record.key_hash) else b""
        self.until = until


class KeyCache:
    """Records by key id for ``ttl_s`` seconds (0: nothing is cached), at most ``max_entries`` of them."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError(f"key cache: ttl_s must be >= 0 and max_entries >= 1, got {ttl_s}, {max_entries}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        #: in order of lookup, the first the oldest; read without the lock (``get``, ``KeyStore.authenticate``)
        self.entries: dict[str, CachedKey] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.entries

    def get(self, key_id: str) -> CachedKey | None:
        """The entry of ``key_id`` while it is fresh, else ``None``."""
        entry = self.entries.get(key_id)
        if entry is None or self.clock() >= entry.until:
            return None
        return entry

    def put(self, record: KeyRecord, read_at: float | None = None) -> CachedKey:
        """Keep ``record`` (a key that exists) for ``ttl_s`` from ``read_at`` (the cache's clock when its lookup
        began; default now); the entry, also when nothing is cached. Counting from the lookup's start bounds a
        revocation's delay by ``ttl_s`` even when the lookup was slow, or raced with ``drop``."""
        entry = CachedKey(record, (self.clock() if read_at is None else read_at) + self.ttl_s)
        if self.ttl_s <= 0:
            return entry
        entries = self.entries
        with self._lock:
            entries.pop(record.key_id, None)  # re-inserted: last in the order of lookups
            entries[record.key_id] = entry
            while len(entries) > self.max_entries:
                del entries[next(iter(entries))]
        return entry

    def drop(self, key_id: str) -> None:
        """Forget ``key_id``: this process changed its record."""
        with self._lock:
            self.entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
