"""Per-key limits shared through Redis by real servers: ``--workers 2``, and two servers, each admit in total
what the key's limit allows (within 10 %), from concurrent bounded request loops; the 429s name the limit."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from helpers.keys import cli_create_key
from helpers.redis_server import own_redis

from .server import serve

SLEEPY = "toymodels:Sleepy"


def _loop(url: str, key: str, rows: int, attempts: int) -> list[tuple[int, str, int | None]]:
    """``attempts`` requests of ``rows`` rows, one after another on one connection: (status, detail, pid)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    body = json.dumps([{"seconds": 0.0}] * rows)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    out: list[tuple[int, str, int | None]] = []
    try:
        for _ in range(attempts):
            conn.request("POST", "/predict", body, headers)
            r = conn.getresponse()
            answer = json.loads(r.read())
            if r.status == 200:
                first = answer["predictions"][0] if "predictions" in answer else answer
                out.append((200, "", int(first["pid"])))
            else:
                assert r.status == 429 and int(r.headers["retry-after"]) >= 1, answer
                out.append((429, answer["detail"], None))
    finally:
        conn.close()
    return out


def _run(loops: list[tuple[str, str, int, int]]) -> list[tuple[int, str, int | None]]:
    with ThreadPoolExecutor(len(loops)) as pool:
        return [r for results in pool.map(lambda a: _loop(*a), loops) for r in results]


def test_two_workers_share_the_key_limits_through_redis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state, "--rate", "120/h")
    with own_redis(tmp_path) as redis, serve(
        SLEEPY, "--state-dir", str(state), "--workers", "2", "--redis-url", redis.url, "--rate-limit", "0",
        "--auth", "on", tmp_dir=tmp_path, timeout=90,
    ) as server:  # fmt: skip
        # 4 loops x 80 = 320 attempts, on fresh connections spread over both workers
        results = _run([(server.url, key, 1, 80)] * 4)
    statuses = Counter(status for status, _, _ in results)
    pids = {pid for _, _, pid in results if pid is not None}
    print(f"--workers 2, limit 120/h: {statuses[200]} admitted of {len(results)}, by {len(pids)} workers")
    assert abs(statuses[200] - 120) <= 12, statuses
    assert statuses[200] + statuses[429] == len(results)
    assert len(pids) == 2  # both workers admitted requests, from one shared count
    assert "over its rate limit of 120 requests per hour (120/h)" in next(d for s, d, _ in results if s == 429)


def test_two_servers_share_the_row_quota_through_redis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state, "--quota", "1000rows/day")
    common = ("--state-dir", str(state), "--rate-limit", "0", "--auth", "on")
    with own_redis(tmp_path) as redis:
        flags = (*common, "--redis-url", redis.url)
        with (
            serve(SLEEPY, *flags, tmp_dir=tmp_path, timeout=90) as a,
            serve(SLEEPY, *flags, tmp_dir=tmp_path, timeout=90) as b,
        ):
            # 2 loops on each server x 40 requests of 10 rows: 1,600 rows asked, 1,000 allowed
            results = _run([(a.url, key, 10, 40), (b.url, key, 10, 40)] * 2)
    statuses = Counter(status for status, _, _ in results)
    print(f"2 servers, quota 1000rows/day: {statuses[200] * 10} rows admitted of {len(results) * 10}")
    assert abs(statuses[200] * 10 - 1000) <= 100, statuses
    assert len({pid for _, _, pid in results if pid is not None}) == 2
    refused = [d for s, d, _ in results if s == 429]
    assert any("over its quota of 1000 rows per day (1000rows/day)" in d for d in refused)
