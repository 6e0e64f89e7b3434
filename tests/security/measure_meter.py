"""What a key's limits cost per request: ``PYTHONPATH=tests python tests/security/measure_meter.py`` (not a test;
tests/ on the path for ``helpers``, as under pytest).

Prints the mean time of one admission (three limits: requests per minute and per day, rows per day) through
the Redis meter, against a Redis of its own on loopback, and through the per-process meter.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from helpers.redis_server import OwnRedis
from modelapi.security.key_limits import Limit
from modelapi.security.meter import LocalMeter, Meter, RedisMeter, head_checks

LIMITS = [Limit("requests", 10**9, 60), Limit("requests", 10**9, 86400), Limit("rows", 10**12, 86400)]


async def mean_s(meter: Meter, n: int = 3000) -> float:
    checks = head_checks(LIMITS)
    for _ in range(200):  # warm: connections, the script loaded
        await meter.admit("k", checks)
    started = time.perf_counter()
    for _ in range(n):
        await meter.admit("k", checks)
    return (time.perf_counter() - started) / n


async def main(url: str) -> None:
    redis = RedisMeter(url)
    try:
        shared = await mean_s(redis)
    finally:
        await redis.close()
    local = await mean_s(LocalMeter())
    print(f"one admission, 3 limits: Redis meter {shared * 1e6:.0f} us, per-process meter {local * 1e6:.1f} us")


if __name__ == "__main__":
    server = OwnRedis(Path(tempfile.mkdtemp()))
    server.start()
    try:
        asyncio.run(main(server.url))
    finally:
        server.stop()
