"""The meter: counts what each API key uses against its limits (``key_limits.Limit``) and refuses what is over.

Each limit is a sliding window over its length ``w`` (seconds): the count of the current fixed window plus the
previous window's count weighted by the share of it still inside the last ``w`` seconds,
``previous * (1 - elapsed / w) + current``. A request is admitted when that estimate plus what it needs stays
within the limit; what is refused is not counted. Two counters per limit, whatever the traffic.

How a request is charged: at its head (after authentication, before the body is read) it needs one request
from every request limit and, if it has a body (POST, PUT), at least one row left in every row limit, so a
key whose row quota is spent is refused before its body is read; it is counted as one request. Once
its rows are known (decoded and validated, before they reach a model) they are checked and counted against
the row limits, and a request they would take over a limit is refused with 429 naming that limit.

``LocalMeter`` keeps the counters in this process: with ``--workers N`` or N replicas a key gets N times its
limits. ``RedisMeter`` keeps them in Redis (``--redis-url``), so they hold across every process and replica:
one Lua script per admission checks every window of the key and counts them all, atomically, in one round
trip, on Redis's clock; it answers the shared counts, which the process keeps as its own. When Redis cannot
be reached the process falls back to its own ``LocalMeter`` (a warning in the log, once per outage), which
goes on from the shared counts it last saw for each key, and remembers what it admits; it tries Redis again
at most once a second, with one request (those arriving meanwhile count locally), and when Redis answers the
requests add what it admitted meanwhile to the shared counters, a part each. Each addition carries a mark, so
one whose answer was lost is sent again and still counts once: nothing admitted during the outage is lost from
the windows or added twice. (A request's own check whose answer is lost after Redis ran it is counted there
and locally: twice, on the strict side, for at most the checks in flight as Redis stopped answering.) During an
outage each process enforces the limits alone, from where the shared count stood when it last saw the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .key_limits import Limit

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("modelapi.limits")

#: one check: the limit, what the request needs from it to go ahead, what it then counts against it
Check = tuple[Limit, int, int]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The limit that refused, and the seconds until the request would fit (``inf``: it never will)."""

    limit: Limit
    wait_s: float


def head_checks(limits: Sequence[Limit], rows: bool = True) -> list[Check]:
    """At a request's head: one request from each request limit and, for a request that may carry rows
    (``rows``: one with a body), one row left in each row limit."""
    return [(lim, 1, 1) if lim.what == "requests" else (lim, 1, 0) for lim in limits if rows or lim.what == "requests"]


def row_checks(limits: Sequence[Limit], rows: int) -> list[Check]:
    """Once its rows are known: the rows, against each row limit."""
    return [(lim, rows, rows) for lim in limits if lim.what == "rows"]


def wait_s(count: int, need: int, current: float, previous: float, elapsed: float, window: float) -> float:
    """Seconds until ``need`` more fits in the sliding window (``inf`` if never); the Lua script does the same."""
    if need > count:
        return math.inf
    if current + need <= count:  # what still weighs is the previous window: wait until enough of it slid out
        return max(0.0, window * (1 - (count - need - current) / previous) - elapsed) if previous > 0 else 0.0
    # the current window alone is over: wait for the next one, then for enough of this one to slide out
    return (window - elapsed) + window * (1 - (count - need) / current)


class Meter(Protocol):
    async def admit(self, key_id: str, checks: Sequence[Check]) -> Refusal | None:
        """``None``: admitted and counted; else the first limit that refused (nothing is counted then)."""

    async def close(self) -> None: ...


class _Window:
    __slots__ = ("current", "index", "previous")

    def __init__(self, index: int) -> None:
        self.index = index
        self.current = 0
        self.previous = 0

    def roll(self, index: int) -> None:
        if index != self.index:
            self.previous = self.current if index == self.index + 1 else 0
            self.current = 0
            self.index = index


class LocalMeter:
    """The counters in this process's memory (per process: see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.windows: dict[tuple[str, str, int], _Window] = {}
        self._swept = clock()

    def admit_now(self, key_id: str, checks: Sequence[Check], now: float | None = None) -> Refusal | None:
        now = self.clock() if now is None else now
        found: list[tuple[_Window, int]] = []
        for limit, need, cost in checks:
            w = limit.window_s
            index = int(now // w)
            slot = (key_id, limit.what, w)
            window = self.windows.get(slot)
            if window is None:
                window = self.windows[slot] = _Window(index)
            window.roll(index)
            elapsed = now - index * w
            if window.previous * (1 - elapsed / w) + window.current + need > limit.count:
                return Refusal(limit, wait_s(limit.count, need, window.current, window.previous, elapsed, w))
            found.append((window, cost))
        for window, cost in found:
            window.current += cost
        self._sweep(now)
        return None

    def mirror(self, key_id: str, limit: Limit, index: int, current: int, previous: int) -> None:
        """Take the shared counts of one limit as this process's own (the starting point if Redis goes away)."""
        slot = (key_id, limit.what, limit.window_s)
        window = self.windows.get(slot)
        if window is None:
            window = self.windows[slot] = _Window(index)
        window.index, window.current, window.previous = index, current, previous
        self._sweep(index * limit.window_s)

    def _sweep(self, now: float) -> None:
        if now - self._swept > 3600:  # drop the windows of keys idle for two of their window lengths
            self._swept = now
            self.windows = {k: v for k, v in self.windows.items() if int(now // k[2]) - v.index < 2}

    async def admit(self, key_id: str, checks: Sequence[Check]) -> Refusal | None:
        return self.admit_now(key_id, checks)

    async def close(self) -> None:
        return None


# KEYS: one hash per limit (fields i: window index, c: its count, p: the previous window's count).
# ARGV: per limit, window seconds, count, need, cost. All checked before any is counted; Redis's own clock.
# Returns {0, '0', then per limit: window index, current count, previous count} or {limit number, wait s}.
ADMIT = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: TIME before writes needs it
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = {}
for i = 1, #KEYS do
  local b = 4 * (i - 1)
  local w, count, need = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local idx = math.floor(now / w)
  local h = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
  local si, c, p = tonumber(h[1]) or idx, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if si ~= idx then
    if si == idx - 1 then p = c else p = 0 end
    c = 0
  end
  local e = now - idx * w
  if p * (1 - e / w) + c + need > count then
    local wait
    if need > count then wait = -1
    elseif c + need <= count then wait = math.max(0, w * (1 - (count - need - c) / p) - e)
    else wait = (w - e) + w * (1 - (count - need) / c) end
    return {i, tostring(wait)}
  end
  state[i] = {idx, c, p, w, tonumber(ARGV[b + 4])}
end
local out = {0, '0'}
for i = 1, #KEYS do
  local s = state[i]
  redis.call('HSET', KEYS[i], 'i', s[1], 'c', s[2] + s[5], 'p', s[3])
  redis.call('EXPIRE', KEYS[i], 2 * s[4] + 60)
  out[#out + 1] = tostring(s[1])
  out[#out + 1] = tostring(s[2] + s[5])
  out[#out + 1] = tostring(s[3])
end
return out
"""

# KEYS[1]: one limit's hash; KEYS[2]: this addition's mark; ARGV: window seconds, the window index, the amount
# admitted in it meanwhile. An addition whose answer was lost (a timeout, a cancelled request) is sent again
# with the same mark, and the mark makes it count once. The mark is set after the read that can fail (a key of
# another type), as Redis does not undo a script's writes when a later command of it fails.
ADD = """
local w, idx, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
if not redis.call('SET', KEYS[2], 1, 'NX', 'EX', 2 * w + 60) then return 0 end
local si, c, p = tonumber(h[1]) or idx, tonumber(h[2]) or 0, tonumber(h[3]) or 0
if idx == si then c = c + amount
elseif idx == si - 1 then p = p + amount
elseif idx > si then
  if idx == si + 1 then p = c else p = 0 end
  c, si = amount, idx
end
redis.call('HSET', KEYS[1], 'i', si, 'c', c, 'p', p)
redis.call('EXPIRE', KEYS[1], 2 * w + 60)
return 1
"""


#: windows of counts admitted during an outage added in one round trip: 1,000 take about 30 ms on a loaded
#: machine's local Redis, where 60,000 in one took longer than the timeout
FLUSH_WINDOWS = 1000


def redis_key(key_id: str, limit: Limit) -> str:
    # the braces keep all of a key's counters in one Redis Cluster slot, as one script touches them together
    return f"modelapi:limit:{{{key_id}}}:{limit.what}:{limit.window_s}"


class RedisMeter:
    """The counters in Redis, shared by every process and replica; ``LocalMeter`` while Redis is away."""

    def __init__(self, url: str, *, retry_s: float = 1.0, timeout_s: float = 1.0, connections: int = 16) -> None:
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
        except ImportError as exc:
            raise ValueError(f"redis_url needs the queue extra: pip install 'modelapi[queue]' ({exc})") from None

        self.url = url
        # a bounded pool: a burst of requests waits for a connection rather than opening hundreds; the timeouts
        # bound what a request waits when Redis is away (then at most once a second per process: retry_s)
        pool = BlockingConnectionPool.from_url(
            url, max_connections=connections, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )  # fmt: skip
        self.client: Redis = Redis(connection_pool=pool)
        self._admit = self.client.register_script(ADMIT)
        self._add = self.client.register_script(ADD)
        self.local = LocalMeter()
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.down_since: float | None = None
        self._tried = 0.0
        #: what this process admitted while Redis was away: (redis key, window s, window index) -> amount
        self.pending: dict[tuple[str, int, int], int] = {}
        #: additions sent and not known to have counted: slot -> (mark, amount), sent again as they were
        self._sending: dict[tuple[str, int, int], tuple[str, int]] = {}
        self._flushing = False  # one flush at a time; requests that find one under way do not wait for it
        self._probing = False  # while Redis is away, one request at a time tries it; the rest count locally
        #: the counters of checks Redis refused as of the wrong type, each logged once (``_refused_key``)
        self._wrong_keys: set[tuple[str, ...]] = set()

    async def admit(self, key_id: str, checks: Sequence[Check]) -> Refusal | None:
        from redis.exceptions import RedisError

        now = time.monotonic()
        probe = self.down_since is not None
        if probe and (self._probing or now - self._tried < self.retry_s):
            return self._admit_locally(key_id, checks)
        if probe:
            self._probing = True
        try:
            # one deadline for the whole call: waiting for a pooled connection, connecting, a part of the counts
            # admitted during an outage, and the answer
            async with asyncio.timeout(self.timeout_s):
                if self.pending and not self._flushing:
                    await self._flush()
                result = await self._admit(keys=[redis_key(key_id, c[0]) for c in checks], args=_args(checks))
        except (RedisError, OSError) as exc:  # OSError: TimeoutError among them
            if _wrong_type(exc):  # Redis answered: one of this key's counters is not a hash
                return self._refused_key(key_id, checks, exc, now)
            self._tried = time.monotonic()  # the next try a retry_s after this one gave up, not after it began
            if self.down_since is None:
                self.down_since = now
                log.warning(
                    "Redis at %s cannot be reached (%s): rate limits and quotas are enforced per process "
                    "until it answers again; what is admitted meanwhile is added to it then",
                    _safe(self.url),
                    type(exc).__name__,
                )
            return self._admit_locally(key_id, checks)
        finally:
            if probe:
                self._probing = False
                self._tried = time.monotonic()  # also when the request was cancelled while it tried
        self._answered(now)
        if self._wrong_keys:
            self._wrong_keys.discard(_counters(key_id, checks))
        refusal = _verdict(checks, result)
        if refusal is None:  # where this process's own counts start if Redis goes away
            for n, (limit, _need, _cost) in enumerate(checks):
                index, current, previous = (int(float(v)) for v in result[2 + 3 * n : 5 + 3 * n])
                self.local.mirror(key_id, limit, index, current, previous)
        return refusal

    def _answered(self, now: float) -> None:
        if self.down_since is not None:
            log.warning(
                "Redis answers again after %.1f s: rate limits and quotas are shared again", now - self.down_since
            )
            self.down_since = None

    def _refused_key(self, key_id: str, checks: Sequence[Check], exc: Exception, now: float) -> Refusal | None:
        """A check Redis refused because one of its counters holds another type (written by something else):
        Redis answers, so only this check's limits of the key are counted by the process alone (nothing pending:
        its counts could not be added), logged once until a check of the same counters goes through again; the
        other keys, and this key's other checks, stay on the shared counts. Taking Redis for away would move every
        key off it, again at each probe."""
        self._answered(now)
        counters = _counters(key_id, checks)
        if counters not in self._wrong_keys:
            if len(self._wrong_keys) >= 1024:  # bounded: the keys are the clients'
                self._wrong_keys.clear()
            self._wrong_keys.add(counters)
            log.error(
                "Redis refused the limits check of key %s (%s): one of its counters (%s) holds another type; these "
                "limits are counted by each process alone until the counter is deleted or is a hash again",
                key_id,
                exc,
                ", ".join(counters),
            )
        return self.local.admit_now(key_id, checks)

    def _admit_locally(self, key_id: str, checks: Sequence[Check]) -> Refusal | None:
        stamp = time.time()
        refusal = self.local.admit_now(key_id, checks, stamp)
        if refusal is None:
            for limit, _need, cost in checks:
                if cost:
                    slot = (redis_key(key_id, limit), limit.window_s, int(stamp // limit.window_s))
                    self.pending[slot] = self.pending.get(slot, 0) + cost
        return refusal

    async def _flush(self) -> None:
        """Add a part of what was admitted locally to the shared counters: at most ``FLUSH_WINDOWS`` windows in one
        round trip (a pipeline), one flush at a time, so that however many windows an outage left (one per key,
        limit and window), the request that flushes waits for one round trip, and the next requests add the rest.
        Each addition carries a mark, and one whose answer was lost is sent again with the same mark and amount,
        so neither an outage in the middle nor a cancelled request loses or doubles a count. What is admitted
        locally meanwhile stays pending."""
        self._flushing = True
        try:
            slots = list(itertools.islice(self.pending, FLUSH_WINDOWS))
            # the script loaded in the same pipeline: redis-py's own check that it is loaded would be a round
            # trip of its own before the additions are sent
            pipe = self.client.pipeline(transaction=False)
            pipe.script_load(ADD)
            for slot in slots:
                key, window, index = slot
                if slot not in self._sending:
                    self._sending[slot] = (f"{key}:added:{uuid.uuid4().hex}", self.pending[slot])
                mark, amount = self._sending[slot]
                pipe.evalsha(self._add.sha, 2, key, mark, window, index, amount)
            answers = await pipe.execute(raise_on_error=False)
            for slot, answer in zip(slots, answers[1:], strict=True):
                if isinstance(answer, Exception):
                    if not _wrong_type(answer):
                        raise answer  # Redis cannot take writes (out of memory, a read-only replica): as if away
                    # one key's counter is not a hash (written by something else): its counts cannot be added,
                    # and keeping them would keep every key off Redis
                    log.error("Redis refused the counts admitted for %s during an outage (%s)", slot[0], answer)
                    self._sending.pop(slot)
                    del self.pending[slot]
                    continue
                _mark, amount = self._sending.pop(slot)
                left = self.pending[slot] - amount
                if left:
                    self.pending[slot] = left
                else:
                    del self.pending[slot]
        finally:
            self._flushing = False
        if not self.pending:
            log.info("rate-limit counts admitted while Redis was away were added to it")

    async def close(self) -> None:
        """Adds what is still pending while Redis answers (an outage that ended since the last request), each part
        within a timeout, unless a request's flush is under way; then closes."""
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            while self.pending and not self._flushing:
                async with asyncio.timeout(self.timeout_s):
                    await self._flush()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


def _counters(key_id: str, checks: Sequence[Check]) -> tuple[str, ...]:
    return tuple(redis_key(key_id, check[0]) for check in checks)


def _wrong_type(exc: Exception) -> bool:
    """Whether Redis refused a script because a key holds another type (its error names WRONGTYPE)."""
    from redis.exceptions import ResponseError

    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


def _args(checks: Sequence[Check]) -> list[int]:
    out: list[int] = []
    for limit, need, cost in checks:
        out += [limit.window_s, limit.count, need, cost]
    return out


def _verdict(checks: Sequence[Check], result: Any) -> Refusal | None:
    index, wait = int(result[0]), float(result[1])
    if index == 0:
        return None
    return Refusal(checks[index - 1][0], math.inf if wait < 0 else wait)


def _safe(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def meter_for(redis_url: str | None) -> Meter:
    """``RedisMeter`` with a Redis URL, else ``LocalMeter``."""
    return RedisMeter(redis_url) if redis_url else LocalMeter()


AdmitRows = Callable[[int], Awaitable[None]]
