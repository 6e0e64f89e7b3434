"""The Redis meter against a Redis of the test's own: admissions from many clients at once stop exactly at the
limit (one atomic script), and while Redis is stopped each process falls back to its own counters, then adds
what it admitted to Redis when it is back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from helpers.redis_server import own_redis
from modelapi.security.key_limits import Limit
from modelapi.security.meter import RedisMeter, head_checks, row_checks


def test_meters_sharing_redis_admit_exactly_the_limit(tmp_path: Path) -> None:
    limits = [Limit("requests", 50, 60), Limit("rows", 1000, 86400)]

    async def main(url: str) -> tuple[int, int]:
        meters = [RedisMeter(url) for _ in range(4)]  # four processes' worth of clients
        try:
            heads = await asyncio.gather(*(m.admit("k", head_checks(limits)) for m in meters for _ in range(30)))
            rows = await asyncio.gather(*(m.admit("r", row_checks(limits, 7)) for m in meters for _ in range(50)))
            assert all(m.down_since is None and not m.pending for m in meters), "a meter fell back to its own counts"
        finally:
            for m in meters:
                await m.close()
        return sum(h is None for h in heads), sum(r is None for r in rows)

    with own_redis(tmp_path) as redis:
        admitted, charged = asyncio.run(main(redis.url))
    assert admitted == 50  # of 120 attempts
    assert charged == 1000 // 7  # of 200 attempts of 7 rows: 142 fit in 1000


def test_redis_away_falls_back_to_the_process_and_adds_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limits = [Limit("requests", 100, 3600)]
    checks = head_checks(limits)

    async def main() -> None:
        with own_redis(tmp_path) as redis:
            meter = RedisMeter(redis.url, retry_s=0.2)
            other = RedisMeter(redis.url)
            try:
                assert all([await meter.admit("k", checks) is None for _ in range(30)])
                redis.stop()
                # away: the process enforces the limit alone, from what it admitted itself (0 in its own counters)
                outage = [await meter.admit("k", checks) for _ in range(120)]
                assert sum(v is None for v in outage) == 100
                assert meter.down_since is not None and meter.pending
                redis.start()  # empty again (no persistence): the counts come only from what the process adds
                await asyncio.sleep(0.25)
                assert await meter.admit("k", checks) is not None  # 100 added back: the key is over its limit
                assert meter.down_since is None and not meter.pending
                refusal = await other.admit("k", checks)  # another process sees the shared count
                assert refusal is not None and refusal.limit == limits[0]
            finally:
                await meter.close()
                await other.close()

    with caplog.at_level(logging.INFO, logger="modelapi.limits"):
        asyncio.run(main())
    text = caplog.text
    assert "cannot be reached" in text and "enforced per process" in text
    assert "answers again" in text and "were added to it" in text
