"""The Redis meter against a Redis of the test's own: admissions from many clients at once stop exactly at the
limit (one atomic script), and while Redis is stopped each process falls back to its own counters (going on
from the shared count it last saw), then adds what it admitted to Redis when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.redis_server import OwnRedis, own_redis
from helpers.tcp_proxy import tcp_proxy
from modelapi.security.key_limits import Limit
from modelapi.security.meter import RedisMeter, head_checks, redis_key, row_checks


async def _shared_count(port: int, limit: Limit, key_id: str = "k") -> int:
    """A key's count in Redis, the current window's and the previous one's: a test that runs across the window's
    turn finds its count split between them."""
    from redis.asyncio import Redis

    client = Redis(port=port)
    try:
        return sum(int(v or 0) for v in await client.hmget(redis_key(key_id, limit), ["c", "p"]))
    finally:
        await client.aclose()


def test_meters_sharing_redis_admit_exactly_the_limit(tmp_path: Path) -> None:
    limits = [Limit("requests", 50, 60), Limit("rows", 1000, 86400)]

    async def main(url: str) -> tuple[int, int]:
        # four processes' worth of clients; a generous timeout, as a stall of the machine is not what this tests
        meters = [RedisMeter(url, timeout_s=30) for _ in range(4)]
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
            return away[0], away[1], await _shared_count(redis.port, limit)
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


def test_requests_at_once_after_an_outage_add_the_local_counts_once(tmp_path: Path) -> None:
    """While Redis is away, one request at a time tries it again and those arriving meanwhile count locally;
    once it is back, many requests at once find counts pending, and they are added to Redis exactly once."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])

    async def burst(meter: RedisMeter, n: int) -> int:
        return sum(r is None for r in await asyncio.gather(*(meter.admit("k", checks) for _ in range(n))))

    async def main(redis: OwnRedis) -> tuple[int, int]:
        meter = RedisMeter(redis.url, retry_s=0.2)
        try:
            admitted = await burst(meter, 10)
            redis.stop()
            admitted += await burst(meter, 20)
            assert meter.down_since is not None and meter.pending
            redis.start()
            await asyncio.sleep(0.25)
            admitted += await burst(meter, 40)  # one tries Redis; the rest count locally meanwhile
            assert meter.down_since is None and meter.pending
            admitted += await burst(meter, 40)  # all of these find the counts pending
            assert not meter.pending
            return admitted, await _shared_count(redis.port, limit)
        finally:
            await meter.close()

    with own_redis(tmp_path, persistent=True) as redis:
        admitted, shared = asyncio.run(main(redis))
    assert admitted == 110
    assert shared == 110  # every admission counted once: none lost, none added twice


def test_while_redis_does_not_answer_one_request_at_a_time_waits_for_it() -> None:
    """A Redis that accepts connections and never answers: once the outage is known, a request tries it again
    at most once per ``retry_s``, and the requests that arrive while it waits count locally at once."""
    checks = head_checks([Limit("requests", 1000, 3600)])
    with socket.create_server(("127.0.0.1", 0), backlog=256) as silent:  # never accepts: connects, then nothing
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def main() -> None:
            meter = RedisMeter(url, retry_s=0.2, timeout_s=0.5)
            try:
                assert await meter.admit("k", checks) is None  # waited out the timeout, then counted locally
                assert meter.down_since is not None
                await asyncio.sleep(0.25)
                burst = [asyncio.ensure_future(meter.admit("k", checks)) for _ in range(20)]
                for _ in range(3):
                    await asyncio.sleep(0)
                assert sum(t.done() for t in burst) == 19  # all but the one that tries Redis again
                assert all(t.result() is None for t in burst if t.done())
                assert await asyncio.gather(*burst) == [None] * 20
                assert sum(meter.pending.values()) == 21  # every admission remembered, to add to Redis later
            finally:
                await meter.close()

        asyncio.run(main())


def test_a_redis_that_stops_answering_with_counts_pending_delays_each_request_once(tmp_path: Path) -> None:
    """Counts pending from an outage, Redis taken for back (a request got through), then Redis stops answering:
    requests wait side by side, none behind another's flush; one that finds the pool's 16 connections taken may
    wait two timeouts (its deadline's, then the rest of its wait inside redis-py's pool once cancelled), no more.
    Once Redis answers again, it holds every admission once."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])
    timeout_s = 2.0

    async def main(redis: OwnRedis) -> tuple[int, int, list[float]]:
        async with tcp_proxy(redis.port) as proxy:
            meter = RedisMeter(proxy.url, retry_s=0.2, timeout_s=timeout_s)
            admitted = 0

            async def one() -> float:
                nonlocal admitted
                started = time.monotonic()
                refusal = await meter.admit("k", checks)
                admitted += refusal is None  # after the await: other requests count meanwhile
                return time.monotonic() - started

            async def burst(n: int) -> list[float]:
                return list(await asyncio.gather(*(one() for _ in range(n))))

            try:
                await burst(5)
                redis.stop()  # refused at once: all count locally
                await burst(6)
                assert meter.down_since is not None and meter.pending
                redis.start()
                await asyncio.sleep(0.25)
                await burst(10)  # one tries Redis; the nine that come meanwhile count locally
                assert meter.down_since is None and meter.pending
                proxy.mode = "silent"
                first = [asyncio.ensure_future(one()) for _ in range(20)]  # the first of them flushes
                await asyncio.sleep(timeout_s / 2)
                waits = await burst(8) + list(await asyncio.gather(*first))
                proxy.mode = "forward"
                await asyncio.sleep(0.25)
                await burst(1)
                await burst(1)  # the second flushes what the first left, if the first went on alone
                assert not meter.pending
                return admitted, await _shared_count(redis.port, limit), waits
            finally:
                await meter.close()

    with own_redis(tmp_path, persistent=True) as redis:
        admitted, shared, waits = asyncio.run(main(redis))
    assert admitted == 51 and shared == 51
    # at most two timeouts (4 s) each, with room for a stalled machine; behind one another, the 28th would wait
    # 28 timeouts
    assert max(waits) < 2 * timeout_s + 0.9, sorted(waits)


def test_the_request_that_adds_an_outages_counts_has_one_deadline_for_all_of_it(tmp_path: Path) -> None:
    """The first request after an outage adds what was admitted meanwhile, then asks for its own admission: one
    ``timeout_s`` bounds the whole call (connecting, the addition, the answer), not each step. With the addition
    and the answer each slow but within the timeout, and together past it, the request gives up at the deadline and
    is counted locally; once Redis answers in time, Redis holds every admission once."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])
    timeout_s = 1.0

    async def main(redis: OwnRedis) -> tuple[int, int, float]:
        meter = RedisMeter(redis.url, retry_s=0.2, timeout_s=timeout_s)
        admitted = 0

        async def one() -> None:
            nonlocal admitted
            admitted += await meter.admit("k", checks) is None

        flush, admit = meter._flush, meter._admit

        async def slow_flush() -> None:
            await asyncio.sleep(0.8 * timeout_s)
            await flush()

        async def slow_admit(**kwargs: Any) -> Any:
            await asyncio.sleep(0.8 * timeout_s)
            return await admit(**kwargs)

        try:
            for _ in range(5):
                await one()
            redis.stop()
            for _ in range(6):
                await one()
            assert meter.down_since is not None and meter.pending
            redis.start()
            await asyncio.sleep(0.25)
            meter._flush, meter._admit = slow_flush, slow_admit  # type: ignore[method-assign]
            started = time.monotonic()
            await one()  # the probe: it adds the outage's counts, then asks for its own in the same deadline
            took = time.monotonic() - started
            assert meter.down_since is not None  # it gave up: counted locally
            meter._flush, meter._admit = flush, admit  # type: ignore[method-assign]
            await asyncio.sleep(0.25)
            await one()
            await one()  # the second adds what the first left, if the first went on alone
            assert meter.down_since is None and not meter.pending
            return admitted, await _shared_count(redis.port, limit), took
        finally:
            await meter.close()

    with own_redis(tmp_path, persistent=True) as redis:
        admitted, shared, took = asyncio.run(main(redis))
    assert admitted == 14 and shared == 14
    # one deadline: about the timeout (room for a stalled machine), not the 1.6 s of its two steps
    assert 0.9 * timeout_s <= took < timeout_s + 0.45, took


def test_a_long_outage_is_added_a_part_at_a_time(tmp_path: Path) -> None:
    """Many windows admitted during an outage (one per key here) are added a thousand at a time, each request
    after Redis is back adding the next part, until Redis holds them all."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])
    keys = [f"key{n}" for n in range(2500)]

    async def main(redis: OwnRedis) -> tuple[list[int], list[int]]:
        meter = RedisMeter(redis.url, retry_s=0.2)
        try:
            await meter.admit("k", checks)
            redis.stop()
            for key in keys:
                assert await meter.admit(key, checks) is None
            redis.start()
            await asyncio.sleep(0.25)
            left = []
            for _ in range(4):
                await meter.admit("k", checks)
                left.append(len(meter.pending))
            from redis.asyncio import Redis

            client = Redis(port=redis.port)
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(redis_key(key, limit), "c")
            counts = [int(c) for c in await pipe.execute()]
            await client.aclose()
            return left, counts
        finally:
            await meter.close()

    with own_redis(tmp_path, persistent=True) as redis:
        left, counts = asyncio.run(main(redis))
    assert left == [1500, 500, 0, 0]
    assert counts == [1] * len(keys)


def test_a_window_that_redis_refuses_is_dropped_and_the_rest_stay_shared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A window's addition that Redis refuses (its key holds another type: written by something else) is dropped
    with an error in the log, not taken for added nor kept; the other windows are added, and the process stays on
    the shared counts."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])

    async def main(redis: OwnRedis) -> tuple[int, bytes | None]:
        from redis.asyncio import Redis

        client = Redis(port=redis.port)
        meter = RedisMeter(redis.url, retry_s=0.2)
        try:
            await meter.admit("j", checks)
            redis.stop()
            assert await meter.admit("k", checks) is None and await meter.admit("j", checks) is None
            redis.start()
            await client.set(redis_key("k", limit), "not a hash")
            await asyncio.sleep(0.25)
            assert await meter.admit("j", checks) is None
            assert meter.down_since is None and not meter.pending
            return await _shared_count(redis.port, limit, "j"), await client.get(redis_key("k", limit))
        finally:
            await meter.close()
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="modelapi.limits"), own_redis(tmp_path, persistent=True) as redis:
        shared_j, k_value = asyncio.run(main(redis))
    assert shared_j == 3 and k_value == b"not a hash"
    assert "Redis refused the counts admitted for modelapi:limit:{k}:requests:3600" in caplog.text


@pytest.mark.parametrize("lost", ["answer", "request"])
def test_an_addition_whose_answer_is_lost_counts_once(tmp_path: Path, lost: str) -> None:
    """The flush after an outage reaches Redis, which adds the counts, but its answer never comes back (a timeout),
    or the request that flushed is cancelled while it waits (its client went away): the next flush sends the same
    addition again, and Redis counts it once."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])

    async def main(redis: OwnRedis) -> tuple[int, int]:
        async with tcp_proxy(redis.port) as proxy:
            meter = RedisMeter(proxy.url, retry_s=0.2, timeout_s=0.3)
            admitted = 0

            async def one() -> None:
                nonlocal admitted
                refusal = await meter.admit("k", checks)
                admitted += refusal is None

            try:
                proxy.mode = "silent"  # a first outage, whose flush has Redis keep the addition's script
                for _ in range(5):
                    await one()
                proxy.mode = "forward"
                await asyncio.sleep(0.25)
                await one()
                assert not meter.pending and await _shared_count(redis.port, limit) == 6
                proxy.mode = "silent"
                for _ in range(20):
                    await one()  # the first waits out the timeout; then all count locally
                assert sum(meter.pending.values()) == 20
                proxy.mode = "forward"
                await meter.client.ping()  # a connection ready in the pool: the flush's request goes out at once
                proxy.mode = "deaf"  # what is sent reaches Redis; nothing comes back
                await asyncio.sleep(0.25)
                if lost == "answer":
                    await one()  # the flush's addition times out, the request counts locally
                else:
                    cut = asyncio.ensure_future(one())
                    await asyncio.sleep(0.1)  # the addition is in Redis by now, its answer lost
                    cut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await cut
                    await asyncio.sleep(0.25)  # past the timeout of the connection it left waiting
                assert await _shared_count(redis.port, limit) == 26  # Redis did add the 20
                proxy.mode = "forward"
                await asyncio.sleep(0.25)
                await one()
                await one()
                assert not meter.pending
                return admitted, await _shared_count(redis.port, limit)
            finally:
                await meter.close()

    with own_redis(tmp_path) as redis:
        admitted, shared = asyncio.run(main(redis))
    assert shared == admitted  # 29 with the answer lost, 28 with the request cancelled


def test_a_cancelled_try_counts_as_a_try() -> None:
    """While Redis is away, a request that tries it again and is cancelled meanwhile (its client went away)
    still puts the next try a ``retry_s`` later: the requests after it count locally at once."""
    checks = head_checks([Limit("requests", 1000, 3600)])
    with socket.create_server(("127.0.0.1", 0), backlog=256) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def main() -> None:
            meter = RedisMeter(url, retry_s=0.2, timeout_s=0.3)
            try:
                assert await meter.admit("k", checks) is None  # waited out the timeout; Redis is away
                await asyncio.sleep(0.25)
                probe = asyncio.ensure_future(meter.admit("k", checks))
                await asyncio.sleep(0.05)
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
                after = [asyncio.ensure_future(meter.admit("k", checks)) for _ in range(5)]
                await asyncio.sleep(0)
                assert all(t.done() for t in after)  # none tried Redis
            finally:
                await meter.close()

        asyncio.run(main())


def test_counts_still_pending_are_added_when_the_meter_closes(tmp_path: Path) -> None:
    """Counts admitted during an outage that ended after the process's last request are added as it stops."""
    limit = Limit("requests", 1000, 3600)
    checks = head_checks([limit])

    async def main(redis: OwnRedis) -> int:
        meter = RedisMeter(redis.url, retry_s=0.2)
        try:
            assert await meter.admit("k", checks) is None
            redis.stop()
            for _ in range(7):
                assert await meter.admit("k", checks) is None
            redis.start()
        finally:
            await meter.close()
        return await _shared_count(redis.port, limit)

    with own_redis(tmp_path, persistent=True) as redis:
        assert asyncio.run(main(redis)) == 8


def test_a_key_whose_counter_redis_refuses_counts_locally_and_the_rest_stay_shared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key's check that Redis refuses (its counter holds another type: written by something else) counts that
    key's limits in the process alone, logged once, though the key's other checks (its rows) go through Redis in
    between; Redis is not taken for away, and the other keys stay shared."""
    limit = Limit("requests", 3, 3600)
    rows = Limit("rows", 1000, 3600)
    checks = head_checks([limit])

    async def main(redis: OwnRedis) -> tuple[list[bool], int]:
        from redis.asyncio import Redis

        client = Redis(port=redis.port)
        meter = RedisMeter(redis.url)
        try:
            await client.set(redis_key("k", limit), "not a hash")
            verdicts = []
            for _ in range(5):
                verdicts.append(await meter.admit("k", checks) is None)
                assert await meter.admit("k", row_checks([rows], 2)) is None  # a healthy counter of the key
            assert meter.down_since is None and not meter.pending
            assert await meter.admit("j", checks) is None
            return verdicts, await _shared_count(redis.port, limit, "j")
        finally:
            await meter.close()
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="modelapi.limits"), own_redis(tmp_path) as redis:
        verdicts, shared_j = asyncio.run(main(redis))
    assert verdicts == [True, True, True, False, False]  # the process's own count stops at the limit
    assert shared_j == 1
    assert caplog.text.count("Redis refused the limits check of key k") == 1
    assert "one of its counters (modelapi:limit:{k}:requests:3600) holds another type" in caplog.text
    assert "modelapi:limit:{k}:requests:3600" in caplog.text
    assert "cannot be reached" not in caplog.text
