"""Per-key limits shared through Redis by real servers: the two workers of one server, and two servers, admit
in total what the key's limit allows (within 10 %), from concurrent bounded request loops; the 429s name the
limit."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from helpers.keys import cli_create_key
from helpers.redis_server import own_redis

from .server import serve

SLEEPY = "toymodels:Sleepy"


def _loop(url: str, key: str, rows: int, attempts: int, fresh: bool = False) -> list[tuple[int, str, int | None]]:
    """``attempts`` requests of ``rows`` rows, one after another: (status, detail, pid). ``fresh``: each on a new
    connection, sleeping 20 ms in the model, so that the kernel hands them to either worker."""
    parts = urlsplit(url)
    body = json.dumps([{"seconds": 0.02 if fresh else 0.0}] * rows)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    if fresh:
        headers["connection"] = "close"
    out: list[tuple[int, str, int | None]] = []
    conn = None
    try:
        for _ in range(attempts):
            if conn is None or fresh:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
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
        if conn is not None:
            conn.close()
    return out


def _run(loops: list[tuple[str, str, int, int, bool]]) -> list[tuple[int, str, int | None]]:
    with ThreadPoolExecutor(len(loops)) as pool:
        return [r for results in pool.map(lambda a: _loop(*a), loops) for r in results]


def test_workers_and_servers_share_the_key_limits_through_redis(tmp_path: Path) -> None:
    """Server A runs 2 workers, server B one; both share a Redis of the test's own."""
    state = tmp_path / "state"
    per_hour = cli_create_key(state, "--rate", "120/h")
    rows = cli_create_key(state, "--quota", "1000rows/day")
    flags = ("--state-dir", str(state), "--rate-limit", "0", "--auth", "on")
    with own_redis(tmp_path) as redis:
        flags = (*flags, "--redis-url", redis.url)
        with (
            serve(SLEEPY, *flags, "--workers", "2", tmp_dir=tmp_path, timeout=90) as a,
            serve(SLEEPY, *flags, tmp_dir=tmp_path, timeout=90) as b,
        ):
            # the 2 workers of A: 4 loops x 80 = 320 attempts of 1 row, against 120 requests an hour
            workers = _run([(a.url, per_hour, 1, 80, True)] * 4)
            # A and B: 2 loops on each x 40 requests of 10 rows, 1,600 rows against 1,000 a day
            servers = _run([(a.url, rows, 10, 40, False), (b.url, rows, 10, 40, False)] * 2)
            b_pids = set(b.worker_pids()) | {b.process.pid}

    statuses = Counter(status for status, _, _ in workers)
    pids = {pid for _, _, pid in workers if pid is not None}
    print(f"\n--workers 2, limit 120/h: {statuses[200]} admitted of {len(workers)}, by {len(pids)} workers")
    assert abs(statuses[200] - 120) <= 12, statuses
    assert statuses[200] + statuses[429] == len(workers)
    assert len(pids) == 2  # both workers admitted requests, from one shared count
    assert "over its rate limit of 120 requests per hour (120/h)" in next(d for s, d, _ in workers if s == 429)

    statuses = Counter(status for status, _, _ in servers)
    print(f"2 servers, quota 1000rows/day: {statuses[200] * 10} rows admitted of {len(servers) * 10}")
    assert abs(statuses[200] * 10 - 1000) <= 100, statuses
    served_by_b = {pid for _, _, pid in servers if pid in b_pids}
    assert served_by_b and len({pid for _, _, pid in servers if pid is not None} - served_by_b) >= 1  # A and B
    refused = [d for s, d, _ in servers if s == 429]
    assert any("over its quota of 1000 rows per day (1000rows/day)" in d for d in refused)


def test_a_server_goes_on_while_its_redis_is_away(tmp_path: Path) -> None:
    """Redis stopped: no request fails for it, the limit holds in the process from the shared count it last
    saw, the log says so once; Redis back: what was admitted meanwhile is added to it, so the key's total stays
    exactly at its limit."""
    state = tmp_path / "state"
    key = cli_create_key(state, "--rate", "50/h")
    with own_redis(tmp_path, persistent=True) as redis:
        flags = ("--state-dir", str(state), "--rate-limit", "0", "--auth", "on", "--redis-url", redis.url)
        with serve(SLEEPY, *flags, tmp_dir=tmp_path, timeout=90) as server:
            before = Counter(s for s, _, _ in _loop(server.url, key, 1, 20))
            redis.stop()
            during = Counter(s for s, _, _ in _loop(server.url, key, 1, 40))
            redis.start()
            time.sleep(1.2)  # the process tries Redis again at most once a second
            after = Counter(s for s, _, _ in _loop(server.url, key, 1, 10))
            log = server.log()
        shared = _count(redis.url, key)
    print(f"\nbefore {dict(before)}, Redis away {dict(during)}, back {dict(after)}; in Redis: {shared}")
    assert before == {200: 20}
    assert during == {200: 30, 429: 10}  # the process alone, going on from the 20 it saw counted
    assert after == {429: 10} and shared == 50  # the 30 admitted meanwhile were added to Redis's 20
    assert log.count("cannot be reached") == 1 and "answers again" in log


def _count(url: str, key: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.hget(f"modelapi:limit:{{{key.split('_')[1]}}}:requests:3600", "c") or 0)
    finally:
        client.close()
