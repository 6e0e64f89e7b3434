"""A job's rows against the row limits of the API key that submitted it (docs/jobs.md#row-limits).

An interactive request charges its rows through ``CallContext.charge_rows`` and is refused (429) over a row
limit. A job charges each chunk's rows, before they reach the model, through the same meter (per process, or
Redis with ``--redis-url``, where every server and worker shares the counts) to its owner (``JobRecord.owner``,
the key's id), whose limits are read from the key store as a request's key is: through the key cache, so a
``keys update`` reaches running jobs within ``key_cache_s``. Over a limit the job does not fail: it waits until
the limit admits the rows (the meter's refusal says when) and its status says so (``waiting`` below). The job
loop itself is ``service.JobService``; this module holds what it asks: the owner's key, how many rows to charge
at a time, and what a waiting job shows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..security.key_limits import Limit, parse_limit
from ..security.keys import KeyRecord, KeyStore
from ..security.meter import Meter


@dataclass(frozen=True)
class RowQuota:
    """What a process that runs jobs charges their rows with: the key store (the owners' limits and states) and
    the meter its requests are charged through. ``None`` in the job service (authentication off, ``modelapi
    predict`` in process): no job is charged."""

    keys: KeyStore
    meter: Meter

    async def owner(self, key_id: str) -> KeyRecord | None:
        """The owner's record, at most ``key_cache_s`` old; ``None`` if no key has that id any more. SQLite
        answers inline in microseconds (as for requests); a network database is asked from a thread."""
        keys = self.keys
        record = keys.cached_record(key_id)
        if record is not None:
            return record
        if keys.url.startswith("sqlite"):
            return keys.record(key_id)
        return await asyncio.to_thread(keys.record, key_id)


def row_limits(record: KeyRecord) -> tuple[Limit, ...]:
    return tuple(limit for limit in record.limits if limit.what == "rows")


def part_rows(limits: Sequence[Limit]) -> int:
    """The most rows charged (and then scored) at once: half the smallest row limit, rounded up. A chunk larger
    than a limit could never be admitted whole; and under the sliding window a part as large as the whole limit
    fits only once the previous window has slid out entirely, which would hold a job to half its limit's rate,
    where parts of half the limit keep it at the full rate."""
    return max(1, (min(limit.count for limit in limits) + 1) // 2)


def stopped_because(key_id: str, record: KeyRecord | None, now: float) -> str | None:
    """Why the job must stop, when its owner is gone: revoked, expired, or no longer in the key store."""
    if record is None:
        return f"API key mk_{key_id}, which submitted this job, no longer exists"
    state = record.state(now)
    if state == "active":
        return None
    what = "was revoked" if state == "revoked" else "has expired"
    return f"API key '{record.name}' (mk_{key_id}), which submitted this job, {what}"


def waiting(record: KeyRecord, limit: Limit, rows: int, until: float) -> str:
    """What the job store keeps while a job waits for ``limit`` to admit ``rows`` (at the time ``until``)."""
    note = {"key_id": record.key_id, "key_name": record.name, "limit": limit.spec, "rows": rows, "until": until}
    return json.dumps(note)


def describe_waiting(text: str, now: float) -> dict[str, Any]:
    """The ``waiting`` object of a job's status (``GET /jobs/{id}``)."""
    note = json.loads(text)
    limit = parse_limit(note["limit"])
    what = "quota" if limit.window_s >= 86400 else "rate limit"
    seconds = max(1, round(note["until"] - now))
    key = f"mk_{note['key_id']}"
    return {
        "reason": "row_limit",
        "key": key,
        "limit": limit.spec,
        "rows": note["rows"],
        "until": datetime.fromtimestamp(note["until"], UTC).isoformat(timespec="milliseconds"),
        "detail": (
            f"waiting for API key '{note['key_name']}' ({key}): its {what} of {limit.words()} ({limit.spec}) admits "
            f"the next {note['rows']} rows in about {seconds} s"
        ),
    }
