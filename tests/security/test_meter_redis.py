"""The Redis meter against a Redis of the test's own: admissions from many clients at once stop exactly at the
limit (one atomic script), and while Redis is stopped each process falls back to its own counters (going on
from the shared count it last saw), then adds what it admitted to Redis when it is back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from helpers.redis_server import OwnRedis, own_redis
from modelapi.security.key_limits import Limit
from modelapi.security.meter import RedisMeter, head_checks, redis_key, row_checks


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
    """Two processes' meters; Redis stopped (it saves its data) and started again. Meanwhile each process goes
    on alone from the shared count it last saw; afterwards Redis holds every admission, none lost or doubled."""
    limit = Limit("requests", 100, 3600)
    checks = head_checks([limit])

    async def admitted(meter: RedisMeter, n: int) -> int:
        return sum([await meter.admit("k", checks) is None for _ in range(n)])

    async def main(redis: OwnRedis) -> tuple[int, int, int]:
        a, b = RedisMeter(redis.url, retry_s=0.2), RedisMeter(redis.url, retry_s=0.2)
        try:
            assert await admitted(a, 30) == 30 and await admitted(b, 10) == 10  # a saw 30 counted, b saw 40
            redis.stop()
            away = (await admitted(a, 120), await admitted(b, 120))
            assert a.down_since is not None and a.pending and b.pending
            redis.start()
            await asyncio.sleep(0.25)
            assert await a.admit("k", checks) is not None and await b.admit("k", checks) is not None
            assert a.down_since is None and not a.pending and not b.pending
            from redis.asyncio import Redis

            client = Redis.from_url(redis.url)
            shared = int(await client.hget(redis_key("k", limit), "c") or 0)
            await client.aclose()
            return away[0], away[1], shared
        finally:
            await a.close()
            await b.close()

    with caplog.at_level(logging.INFO, logger="modelapi.limits"), own_redis(tmp_path, persistent=True) as redis:
        away_a, away_b, shared = asyncio.run(main(redis))
    assert (away_a, away_b) == (70, 60)  # per process while Redis is away: each up to the limit from its view
    assert shared == 40 + 70 + 60  # everything admitted, in Redis
    text = caplog.text
    assert "cannot be reached" in text and "enforced per process" in text
    assert "answers again" in text and "were added to it" in text
