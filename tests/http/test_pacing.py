"""Request heads taken a slice at a time under a flood (http/pacing.py), in process.

``Pacing`` alone, on a clock the test moves (the module's ``time``): heads one at a time are taken at once, a run
longer than a slice defers the rest, in order, and one callback per turn of the loop takes a slice of them until
none wait; once the oldest has waited ``newest_first_s`` the newest go first, and those that have waited
``oldest_first_s`` before them. Then modelapi's protocol with pacing on (tests/helpers/wire.py), in front of the
server's app: a deferred request is answered as any other once taken, its body and pipelined requests with it,
while a GET on another connection is answered at once; a connection that closes, keeps sending or idles past its
keep-alive while it waits breaks nothing, nor does the server's shutdown; a deferred head's queue time counts from
its read. The order follows the budget it is bound to, the tightest of the app's models in flight.
tests/e2e/test_pacing.py floods the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from helpers.repo import ModelRepo, skops_bytes
from helpers.wire import Answer, Connection
from modelapi.dataplane import DataPlane
from modelapi.http import pacing as pacing_module
from modelapi.http.app import create_app
from modelapi.http.pacing import Paced, Pacing
from modelapi.security.slow_clients import ARRIVED
from modelapi.settings import Settings
from toymodels import Sleepy

MS = 0.001


# Pacing alone -----------------------------------------------------------------------------------------------------
class Clock:
    """``time`` as the pacing module sees it: ``monotonic()`` is ``now``, which only the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(pacing_module, "time", fake)
    return fake


class Head:
    """A connection whose head may wait: taking it (at once or when its turn comes) costs ``cost`` seconds on the
    clock, as parsing and deciding it would; a take from the queue is recorded with the turn of the loop it
    happened in (``Turns``)."""

    def __init__(self, name: str, clock: Clock, turns: Turns, cost: float = 0.0) -> None:
        self.name = name
        self.clock = clock
        self.turns = turns
        self.cost = cost
        self.gone = False  # its client closed the connection while it waited

    def take_waiting(self) -> None:
        self.turns.taken.append((self.turns.turn, self.name))
        self.clock.now += self.cost


class Turns:
    """The turns of the event loop, counted by the test's task: ``await turns.next()`` lets the loop run one turn
    (each ``call_soon`` callback scheduled before it runs once); ``taken``: (turn, name) of each head taken from
    the queue."""

    def __init__(self) -> None:
        self.turn = 0
        self.taken: list[tuple[int, str]] = []

    async def next(self, n: int = 1) -> None:
        for _ in range(n):
            self.turn += 1
            await asyncio.sleep(0)

    def batches(self) -> list[list[str]]:
        """The names taken in each turn that took any, in order."""
        out: dict[int, list[str]] = {}
        for turn, name in self.taken:
            out.setdefault(turn, []).append(name)
        return list(out.values())


def arrive(
    pacing: Pacing,
    clock: Clock,
    turns: Turns,
    names: list[str],
    every: float,
    cost: float = 0.0,
    busy: bool = True,
) -> list[str]:
    """Heads ``names`` read one after another, ``every`` seconds apart, each taken at once costing ``cost``
    (``busy``: while other requests are in progress); the names of those deferred."""
    deferred = []
    for name in names:
        if pacing.later(Head(name, clock, turns, cost), busy):
            deferred.append(name)
        else:
            clock.now += cost
        clock.now += every
    return deferred


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def waiting(pacing: Pacing) -> list[str]:
    return [head.name for head, _ in pacing.waiting]  # type: ignore[attr-defined]


def test_heads_one_at_a_time_are_never_deferred(clock: Clock) -> None:
    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        # 300 ms of heads, each alone: 1.5 ms apart (the 0.4 ms each takes, then 1.1 ms), over the 1 ms gap
        assert arrive(pacing, clock, turns, names("h", 200), every=1.1 * MS, cost=0.4 * MS) == []
        assert not pacing.waiting
        await turns.next(3)
        assert turns.taken == []  # nothing was left to take

    asyncio.run(main())


def test_a_client_alone_is_never_deferred_however_closely_its_requests_follow(clock: Clock) -> None:
    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        # one client's requests, each sent as the last answer came: 0.3 ms apart, nothing else in progress
        got = arrive(pacing, clock, turns, names("c", 200), every=0.2 * MS, cost=0.1 * MS, busy=False)
        assert got == []
        assert not pacing.waiting
        # the same heads while other requests are in progress are a run, and are paced
        assert arrive(pacing, clock, turns, names("f", 200), every=0.2 * MS, cost=0.1 * MS) != []

    asyncio.run(main())


def test_a_run_longer_than_a_slice_defers_the_rest_and_later_heads_queue_behind_them(clock: Clock) -> None:
    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        # back to back, 0.6 ms apart: the heads of the run's first 2 ms are taken, the rest wait
        assert arrive(pacing, clock, turns, names("a", 8), every=0.6 * MS) == ["a4", "a5", "a6", "a7"]
        # a head long after the run, alone: others wait, so it waits behind them
        clock.now += 50 * MS
        assert arrive(pacing, clock, turns, ["late"], every=0) == ["late"]
        assert waiting(pacing) == ["a4", "a5", "a6", "a7", "late"]
        await turns.next(1)
        assert turns.batches() == [["a4", "a5", "a6", "a7", "late"]]  # taking them cost no time: all in one turn
        assert not pacing.waiting

    asyncio.run(main())


def test_each_turn_takes_a_slice_of_the_waiting_heads_in_order_until_none_wait(clock: Clock) -> None:
    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        # a flood: 30 heads in one turn's reads; each costs 0.7 ms to take, so a 2 ms slice is 3 of them
        deferred = arrive(pacing, clock, turns, names("f", 30), every=0.01 * MS, cost=0.7 * MS)
        assert deferred == names("f", 30)[3:]
        await turns.next(1)
        assert turns.batches() == [["f3", "f4", "f5"]]
        # heads that come while the queue drains wait behind it, however long after the run began
        clock.now += 10 * MS
        assert arrive(pacing, clock, turns, ["g0", "g1"], every=0.01 * MS, cost=0.7 * MS) == ["g0", "g1"]
        await turns.next(20)
        batches = turns.batches()
        assert [name for batch in batches for name in batch] == [*names("f", 30)[3:], "g0", "g1"]  # first in, first out
        assert [len(b) for b in batches] == [3] * 9 + [2]  # a slice a turn, turn after turn
        first = turns.taken[0][0]
        assert sorted({turn for turn, _ in turns.taken}) == list(range(first, first + len(batches)))  # no turn missed
        assert not pacing.waiting

    asyncio.run(main())


def test_once_the_oldest_has_waited_newest_first_s_the_newest_are_taken_first(clock: Clock) -> None:
    """Behind a backlog longer than the queue budget, oldest first would hand every head over with its budget spent,
    those of clients coming back the moment their answer arrived too: past ``newest_first_s`` the newest go first,
    and the order turns back once the oldest left has waited less."""

    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS, newest_first_s=10 * MS), Turns()
        assert arrive(pacing, clock, turns, names("f", 12), every=0.01 * MS, cost=0.7 * MS) == names("f", 12)[3:]
        await turns.next(1)  # the oldest has waited about 2 ms: oldest first
        assert turns.batches() == [["f3", "f4", "f5"]]
        clock.now += 10 * MS  # the loop was held: f6-f11 have waited past 10 ms
        assert arrive(pacing, clock, turns, ["g0", "g1"], every=0.01 * MS, cost=0.7 * MS) == ["g0", "g1"]
        await turns.next(1)
        assert turns.batches()[-1] == ["g1", "g0", "f11"]
        await turns.next(5)
        assert [name for batch in turns.batches()[2:] for name in batch] == ["f10", "f9", "f8", "f7", "f6"]
        # a new backlog, younger than newest_first_s: oldest first again
        clock.now += 50 * MS
        assert arrive(pacing, clock, turns, names("h", 6), every=0.01 * MS, cost=0.7 * MS) == names("h", 6)[3:]
        await turns.next(2)
        assert turns.batches()[-1] == ["h3", "h4", "h5"]

    asyncio.run(main())


def test_heads_that_have_waited_oldest_first_s_are_taken_before_newer_ones_in_their_order(clock: Clock) -> None:
    """Newest first alone could leave the oldest waiting for as long as new heads keep coming, until their clients
    time out: a head that has waited ``oldest_first_s`` goes first."""

    async def main() -> None:
        pacing = Pacing(slice_s=2 * MS, gap_s=1 * MS, newest_first_s=10 * MS, oldest_first_s=50 * MS)
        turns = Turns()
        assert arrive(pacing, clock, turns, names("o", 8), every=0.01 * MS, cost=0.7 * MS) == names("o", 8)[3:]
        clock.now += 60 * MS  # the loop was held: o3-o7 have waited past 50 ms
        assert arrive(pacing, clock, turns, ["n0", "n1"], every=0.01 * MS, cost=0.7 * MS) == ["n0", "n1"]
        await turns.next(5)
        # then n0 and n1, whose oldest has waited less than newest_first_s: oldest first
        assert turns.batches() == [["o3", "o4", "o5"], ["o6", "o7", "n0"], ["n1"]]

    asyncio.run(main())


def test_the_servers_order_for_its_budget_turns_within_the_default_budget_too(clock: Clock) -> None:
    """``Pacing.for_budget`` (what the server builds from --max-queue-ms): newest first once the oldest has waited
    half the budget, at the default 2 s as at 20 ms, oldest first again past twice the budget; a connection closed
    while it waited does not hold the order newest first; no budget, oldest first always."""

    async def flood(pacing: Pacing, held_s: float) -> list[list[str]]:
        turns = Turns()
        arrive(pacing, clock, turns, names("f", 5), every=0.01 * MS, cost=0.7 * MS)  # f0-f2 taken at once
        clock.now += held_s  # the loop was held that long
        await turns.next(2)
        return turns.batches()

    async def main() -> None:
        assert await flood(Pacing.for_budget(2 * MS, 2.0), 1.5) == [["f4", "f3"]]
        assert await flood(Pacing.for_budget(2 * MS, 2.0), 0.5) == [["f3", "f4"]]
        assert await flood(Pacing.for_budget(2 * MS, 2.0), 4.5) == [["f3", "f4"]]  # refused either way: in order
        assert await flood(Pacing.for_budget(2 * MS, 0.02), 0.015) == [["f4", "f3"]]
        assert await flood(Pacing.for_budget(2 * MS, None), 1.5) == [["f3", "f4"]]
        pacing, turns = Pacing.for_budget(2 * MS, 0.02), Turns()
        arrive(pacing, clock, turns, names("g", 5), every=0.01 * MS, cost=0.7 * MS)
        clock.now += 0.05  # g3 and g4 have waited past the 10 ms
        heads = [Head("h0", clock, turns, 0.7 * MS), Head("h1", clock, turns, 0.7 * MS)]
        for head in heads:
            assert pacing.later(head)
        for head, _ in list(pacing.waiting)[:2]:
            head.gone = True  # type: ignore[attr-defined]  # g3 and g4 closed while they waited
        await turns.next(2)
        assert turns.batches() == [["h0", "h1"]]  # the oldest left is fresh: in order
        with pytest.raises(ValueError, match="newest_first_s"):
            Pacing(newest_first_s=1.0, oldest_first_s=1.0)

    asyncio.run(main())


def test_the_order_follows_the_budget_it_is_bound_to_read_at_each_turn(clock: Clock) -> None:
    """Bound to a budget (``follow``: the server binds the tightest of the models in flight), the order turns at
    half of what that budget is when the heads are taken, not at what it was when it was bound, nor at the
    server's; a budget that raises leaves the order as it was, and the heads are still taken."""
    budget: list[float | None] = [2.0]

    def read() -> float | None:
        if budget[0] == -1.0:
            raise RuntimeError("no budget")
        return budget[0]

    async def flood(then: float | None, held_s: float) -> list[list[str]]:
        pacing, turns = Pacing.for_budget(2 * MS, 2.0), Turns()  # the server's 2 s: a 15 ms wait is young
        pacing.follow(read)
        budget[0] = 2.0
        arrive(pacing, clock, turns, names("f", 5), every=0.01 * MS, cost=0.7 * MS)  # f0-f2 taken at once
        budget[0] = then  # what it is by the turn that takes f3 and f4
        clock.now += held_s
        await turns.next(2)
        return turns.batches()

    async def main() -> None:
        assert await flood(0.02, 0.015) == [["f4", "f3"]]  # a model's 20 ms by then: past 10 ms, newest first
        assert await flood(2.0, 0.015) == [["f3", "f4"]]
        assert await flood(None, 1.5) == [["f3", "f4"]]  # no budget anywhere: oldest first always
        assert await flood(-1.0, 0.015) == [["f3", "f4"]]  # raises: the server's order, the heads taken

    asyncio.run(main())


def test_the_app_binds_the_servers_pacing_to_the_budgets_of_its_models(clock: Clock, tmp_path: Path) -> None:
    """The server builds its pacing before the app, from ``--max-queue-ms`` (2 s here); the app binds it to its
    data plane: with a call in flight to a model whose model.toml says 20 ms, a 15 ms backlog goes newest first."""
    repo = ModelRepo(tmp_path / "models")
    repo.version("m", 1, skops_bytes("m"))
    repo.toml("m", "max_queue_ms = 20\n")
    settings = Settings(models=[str(repo.root)], max_queue_ms=2000, job_workers=0)
    plane = DataPlane.from_settings(settings)
    pacing = Pacing.for_budget(2 * MS, 2.0)
    create_app(plane, settings, pacing=pacing)

    async def flood() -> list[list[str]]:
        turns = Turns()
        arrive(pacing, clock, turns, names("f", 5), every=0.01 * MS, cost=0.7 * MS)
        clock.now += 0.015
        await turns.next(2)
        return turns.batches()

    async def main() -> None:
        await plane.start()
        assert await flood() == [["f3", "f4"]]  # m idle: the server's 2 s
        with plane.admit("m"):
            clock.now += 1.0  # a new run of heads
            assert await flood() == [["f4", "f3"]]
        await plane.close()

    asyncio.run(main())


def test_a_turn_takes_at_least_one_head_however_long_it_takes(clock: Clock) -> None:
    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        assert arrive(pacing, clock, turns, names("s", 8), every=0.1 * MS, cost=0.7 * MS) == names("s", 8)[3:]
        for head, _ in pacing.waiting:
            head.cost = 5 * MS  # type: ignore[attr-defined]  # each takes more than a slice
        await turns.next(10)
        assert turns.batches() == [[n] for n in names("s", 8)[3:]]

    asyncio.run(main())


def test_after_the_queue_empties_the_flood_goes_on_being_paced_and_a_later_lull_is_not(clock: Clock) -> None:
    """The heads read in the turn after a full slice continue its run; heads alone after a gap are taken at once,
    and a later flood is paced again by a new callback."""

    async def main() -> None:
        pacing, turns = Pacing(slice_s=2 * MS, gap_s=1 * MS), Turns()
        assert len(arrive(pacing, clock, turns, names("a", 12), every=0, cost=0.9 * MS)) == 9  # a0-a2 taken
        await turns.next(5)
        assert turns.batches() == [["a3", "a4", "a5"], ["a6", "a7", "a8"], ["a9", "a10", "a11"]]
        assert not pacing.waiting
        # the next turn's reads, right after the slice that emptied the queue: the run goes on
        assert arrive(pacing, clock, turns, ["b0"], every=0, cost=0.9 * MS) == ["b0"]
        await turns.next(1)
        assert turns.taken[-1] == (turns.turn, "b0") and not pacing.waiting
        clock.now += 5 * MS  # a lull: a new run
        assert arrive(pacing, clock, turns, ["c0", "c1"], every=0.1 * MS, cost=0.1 * MS) == []
        clock.now += 5 * MS
        deferred = arrive(pacing, clock, turns, names("d", 40), every=0.2 * MS, cost=0.1 * MS)
        assert deferred == names("d", 40)[7:]  # 0.3 ms a head: d0-d6 in the run's first 2 ms
        for head, _ in pacing.waiting:
            head.cost = 0.15 * MS  # type: ignore[attr-defined]
        await turns.next(4)
        assert [len(b) for b in turns.batches()[4:]] == [14, 14, 5]  # 2 ms slices of 0.15 ms heads
        assert not pacing.waiting

    asyncio.run(main())


# the protocol with pacing on --------------------------------------------------------------------------------------
INFER = "/v2/models/sleepy/infer"


def body(seconds: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "seconds", "datatype": "FP64", "shape": [1], "data": [seconds]}]})


def post(path: str = INFER, seconds: float = 0.0, headers: str = "", content: bytes | None = None) -> bytes:
    content = body(seconds) if content is None else content
    head = f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{headers}"
    return f"{head}content-length: {len(content)}\r\n\r\n".encode() + content


def get(path: str = "/v2/health/live") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()


def seconds_of(answer: Answer) -> list[float]:
    assert answer.status == 200, (answer.status, answer.body)
    data: list[float] = answer.json()["outputs"][0]["data"]
    return data


class Server:
    """The server's app as uvicorn loads it (``keep_alive_s``: its keep-alive timeout), behind connections of the
    protocol sharing one ``Pacing``; ``started``: each request the app was handed, (path, the time it was handed,
    its ``ARRIVED`` stamp), in order."""

    def __init__(self, app: Any, pacing: Pacing | None, keep_alive_s: float) -> None:
        self.app = app
        self.pacing = pacing
        self.config = uvicorn.Config(self, log_config=None, lifespan="off", timeout_keep_alive=keep_alive_s)  # type: ignore[arg-type]
        self.config.load()
        self.started: list[tuple[str, float, float]] = []
        self._port = 50000

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.started.append((scope["path"], time.monotonic(), scope[ARRIVED]))
        await self.app(scope, receive, send)

    def connect(self, header_timeout_s: float = 10.0) -> Connection:
        self._port += 1
        return Connection(
            self,
            peer=("127.0.0.1", self._port),
            config=self.config,
            pacing=self.pacing,
            header_timeout_s=header_timeout_s,
        )

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.started]


@contextlib.asynccontextmanager
async def serving(pacing: Pacing | None, keep_alive_s: float = 5.0, **settings: Any) -> AsyncIterator[Server]:
    """The app serving a sleepy model (``seconds`` of sleep per row, in-flight limit 100) behind the protocol;
    ``pacing``: the server's."""
    options = {"job_workers": 0, "metrics": False, "max_inflight": 100, "hold_early_retries": False, **settings}
    app = create_app([Sleepy()], Settings(**options))
    async with app.router.lifespan_context(app):
        yield Server(app, pacing, keep_alive_s)


class _AlwaysBusy(Pacing):
    """Pacing as if other requests were always in progress (each test connection has a server state of its own)."""

    def later(self, connection: Paced, busy: bool = True) -> bool:
        return super().later(connection, True)


def every_post() -> Pacing:
    """Pacing that defers every POST head and takes one a turn (a slice of 0: over as soon as one is taken)."""
    return _AlwaysBusy(slice_s=0.0)


def run(test: Any) -> None:
    asyncio.run(test())


async def taken(pacing: Pacing, turns: int = 100) -> None:
    """Lets the loop run until no head waits its turn."""
    for _ in range(turns):
        if not pacing.waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(pacing.waiting)} heads still wait after {turns} turns")


async def until(condition: Any, turns: int = 100) -> None:
    """Lets the loop run until ``condition()`` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still not so after {turns} turns")


class Blocker:
    """A head ahead in the queue whose taking holds the loop ``seconds``: the heads behind it wait that long."""

    gone = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def take_waiting(self) -> None:
        time.sleep(self.seconds)


def test_a_deferred_post_is_answered_once_taken_with_its_body_whole_or_split() -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            conn = server.connect()
            conn.feed(post(seconds=0.001))
            assert [c for c, _ in pacing.waiting] == [conn.protocol] and server.started == [] and conn.wire.writes == []
            (answer,) = await conn.answers()
            assert seconds_of(answer) == [0.001]
            request = post(seconds=0.002)
            in_body = request.index(b"\r\n\r\n") + 10
            for parts in (
                [request[:in_body], request[in_body:]],  # the body split, read while it waits
                [request[:20], request[20:60], request[60:]],  # the head split
            ):
                for part in parts:
                    conn.feed(part)
                assert [c for c, _ in pacing.waiting] == [conn.protocol]
                (answer,) = await conn.answers()
                assert seconds_of(answer) == [0.002]
            for split in (20, in_body):  # the rest read after the request was taken
                conn.feed(request[:split])
                await taken(pacing)
                conn.feed(request[split:])
                assert not pacing.waiting  # the rest of a request is taken at once
                (answer,) = await conn.answers()
                assert seconds_of(answer) == [0.002]
            assert server.paths() == [INFER] * 5 and not conn.wire.closed

    run(main)


def test_pipelined_requests_keep_their_order() -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            requests = [post(seconds=0.001), get(), post(seconds=0.002), post("/models/sleepy/predict", content=b"{}")]
            one = server.connect()
            one.feed(b"".join(requests))  # in one packet
            several = server.connect()
            for request in requests:  # in packets of their own, each read while the first waits
                several.feed(request)
            assert [c for c, _ in pacing.waiting] == [one.protocol, several.protocol]
            for conn in (one, several):
                answers = await conn.answers(4)
                assert seconds_of(answers[0]) == [0.001] and answers[1].json() == {"live": True}
                assert seconds_of(answers[2]) == [0.002] and answers[3].status == 400  # records: no "seconds"
            # a request that comes while the one before it runs waits its turn, then is answered after it
            conn = server.connect()
            conn.feed(post(seconds=0.05))
            await taken(pacing)
            conn.feed(post(seconds=0.001))
            assert [c for c, _ in pacing.waiting] == [conn.protocol]
            first, second = await conn.answers(2)
            assert seconds_of(first) == [0.05] and seconds_of(second) == [0.001]

    run(main)


def test_a_get_on_another_connection_is_answered_while_posts_wait() -> None:
    async def main() -> None:
        pacing = every_post()
        # a queue budget no loaded machine reaches: the 50 POSTs are all to be served, whatever their batches took
        async with serving(pacing, max_queue_ms=600_000) as server:
            posts = [server.connect() for _ in range(50)]
            for conn in posts:
                conn.feed(post())
            probe = server.connect()
            probe.feed(get())
            assert len(pacing.waiting) == 50  # the GET was taken at once
            (live,) = await probe.answers()
            assert live.json() == {"live": True}
            assert len(pacing.waiting) >= 40, len(pacing.waiting)  # most POSTs still wait their turn
            for conn in posts:
                (answer,) = await conn.answers()
                assert seconds_of(answer) == [0.0]
            assert server.paths() == ["/v2/health/live", *[INFER] * 50]

    run(main)


def test_a_client_that_disconnects_while_its_head_waits_costs_nothing_and_breaks_nothing() -> None:
    async def main() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        pacing = every_post()
        async with serving(pacing) as server:
            first, gone, last = server.connect(), server.connect(), server.connect()
            for conn in (first, gone, last):
                conn.feed(post())
            gone.feed(b"x" * 100_000)  # more bytes, kept while it waits
            gone.close()
            assert len(pacing.waiting) == 3
            for conn in (first, last):
                (answer,) = await conn.answers()
                assert seconds_of(answer) == [0.0]
            assert not pacing.waiting
            assert server.paths() == [INFER, INFER]  # the app never saw the request of the one that left
            assert gone.wire.writes == []
            # the server goes on as before
            (answer,) = await server.connect().send(post())
            assert seconds_of(answer) == [0.0]
        assert errors == []

    run(main)


def test_a_connection_that_keeps_sending_while_it_waits_stops_being_read_past_64_kib_and_resumes_when_taken() -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            request = post(content=body(0.0) + b" " * 300_000)
            conn = server.connect()
            chunks = [request[i : i + 16384] for i in range(0, len(request), 16384)]
            fed = 0
            while conn.wire.reading:
                conn.feed(chunks[fed])
                fed += 1
            assert fed == 5  # stopped once over 64 KiB were kept
            await taken(pacing)
            await until(lambda: conn.wire.reading)  # read again (once the app reads what was kept: uvicorn's)
            for chunk in chunks[fed:]:
                conn.feed(chunk)
            (answer,) = await conn.answers()
            assert seconds_of(answer) == [0.0] and conn.wire.reading

    run(main)


def test_many_small_requests_pipelined_while_it_waits_are_each_answered_in_order() -> None:
    """Over 64 KiB of requests kept while the connection waits, the last one's head cut off where reading paused:
    what was kept is read as it came, so no head is taken for one over ``max_header_bytes``."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            pad = "x-pad: " + "p" * 500 + "\r\n"
            requests = [post(seconds=i / 1e6, headers=pad) for i in range(150)]
            stream = b"".join(requests)
            conn = server.connect()
            chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
            fed = 0
            while conn.wire.reading:
                conn.feed(chunks[fed])
                fed += 1
            kept = fed * 4096
            assert fed == 17 and kept < stream.index(b"\r\n\r\n", stream.rindex(b"POST ", 0, kept))  # inside a head
            await taken(pacing)
            for chunk in chunks[fed:]:
                conn.feed(chunk)
            answers = await conn.answers(150)
            assert [seconds_of(a) for a in answers] == [[i / 1e6] for i in range(150)]
            assert not conn.wire.closed and conn.wire.reading

    run(main)


def test_a_kept_read_that_ends_the_connection_ends_the_reading(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            conn = server.connect()
            for _ in range(3):
                conn.feed(b"NOT HTTP\r\n\r\n")  # kept while it waits, each read
            (answer,) = await conn.answers()
            assert answer.status == 400 and conn.wire.closed
            assert server.started == []

    caplog.set_level(logging.WARNING, logger="uvicorn.error")
    run(main)
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"] == ["Invalid HTTP request received."]


def test_a_deferred_heads_arrival_is_when_it_was_read_so_its_queue_time_counts_the_wait() -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            conn = server.connect()
            before = time.monotonic()
            conn.feed(post(seconds=0.001))
            after = time.monotonic()
            time.sleep(0.05)  # the loop is busy: it waits
            (answer,) = await conn.answers()
            assert seconds_of(answer) == [0.001]
            ((_, handed, arrived),) = server.started
            assert before <= arrived <= after and handed - arrived >= 0.05
        async with serving(pacing, max_queue_ms=30) as server:
            conn = server.connect()
            conn.feed(post())
            time.sleep(0.05)  # past the queue-time bound before it is taken
            (answer,) = await conn.answers()
            assert answer.status == 503 and "ms it waited to be read" in answer.json()["error"], answer.body

    run(main)


def test_requests_pipelined_behind_a_deferred_one_arrive_when_each_was_read() -> None:
    """As without pacing, a head arrives when the read that completes it is in: two in one read, a third read
    later while they wait, and a fourth whose head ends in a read after they were taken."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            conn = server.connect()
            reads: list[tuple[float, float]] = []  # the times before and after each read

            def read(data: bytes) -> None:
                before = time.monotonic()
                conn.feed(data)
                reads.append((before, time.monotonic()))
                time.sleep(0.03)  # the loop is busy

            fourth = post(seconds=0.004)
            read(post(seconds=0.001) + post(seconds=0.002))
            read(post(seconds=0.003) + fourth[:30])
            await taken(pacing)
            read(fourth[30:])
            answers = await conn.answers(4)
            assert [seconds_of(a) for a in answers] == [[0.001], [0.002], [0.003], [0.004]]
            arrived = [stamp for _, _, stamp in server.started]
            for stamp, (before, after) in zip(arrived, [reads[0], reads[0], reads[1], reads[2]], strict=True):
                assert before <= stamp <= after

    run(main)


def test_keep_alive_does_not_close_a_connection_whose_request_waits() -> None:
    async def main() -> None:
        pacing = every_post()
        async with serving(pacing, keep_alive_s=0.05) as server:
            # an idle connection (its keep-alive timer armed) sends a request that waits past the timeout
            conn = server.connect()
            (answer,) = await conn.send(post())
            for _ in range(10):
                pacing.later(Blocker(0.01))  # 100 ms of others' heads ahead of it
            started = time.monotonic()
            conn.feed(post(seconds=0.001))
            (answer,) = await conn.answers()
            assert time.monotonic() - started > 0.05 and seconds_of(answer) == [0.001] and not conn.wire.closed
            await asyncio.sleep(0.1)  # idle again: the timeout closes it
            assert conn.wire.closed

    run(main)


def test_keep_alive_does_not_close_a_connection_whose_request_came_during_the_one_before_and_waits() -> None:
    """The answer to the request before arms the keep-alive timer: the next, read while that one ran, still waits."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing, keep_alive_s=0.05) as server:
            conn = server.connect()
            conn.feed(post(seconds=0.02))
            await taken(pacing)
            for _ in range(15):
                pacing.later(Blocker(0.01))  # 150 ms of others' heads ahead of the next
            conn.feed(post(seconds=0.001))
            first, second = await conn.answers(2)
            assert seconds_of(first) == [0.02] and seconds_of(second) == [0.001] and not conn.wire.closed

    run(main)


def test_a_request_that_waits_when_the_server_shuts_down_is_answered_then_its_connection_closes() -> None:
    """uvicorn's shutdown closes each connection with no request in progress, and lets a request in progress
    finish first: one read but waiting its turn is such a request."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            idle, busy = server.connect(), server.connect()
            await idle.send(post())
            busy.feed(post(seconds=0.001))
            for conn in (idle, busy):
                conn.protocol.shutdown()  # as uvicorn's Server.shutdown does for each connection
            assert idle.wire.closed and not busy.wire.closed
            (answer,) = await busy.answers()
            assert seconds_of(answer) == [0.001] and answer.headers["connection"] == "close"
            assert busy.wire.closed

    run(main)


def test_a_head_read_before_its_deadline_is_not_refused_408_for_the_time_it_waits_its_turn() -> None:
    """A connection's first head is due ``--header-timeout`` after it was opened: one read in time but still
    waiting its turn then is taken, not refused; one still partial is refused (408) as without pacing."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing) as server:
            conn = server.connect(header_timeout_s=0.1)
            await asyncio.sleep(0.07)  # opened and idle: 30 ms left of its head's time
            for _ in range(10):
                pacing.later(Blocker(0.01))  # 100 ms of others' heads ahead of it
            conn.feed(post(seconds=0.001))
            (answer,) = await conn.answers()
            assert seconds_of(answer) == [0.001] and not conn.wire.closed
            slow = server.connect(header_timeout_s=0.05)
            for _ in range(10):
                pacing.later(Blocker(0.01))
            slow.feed(post()[:20])  # a head that never completes, waiting its turn at its deadline
            (answer,) = await slow.answers()
            assert answer.status == 408 and slow.wire.closed
            assert server.paths() == [INFER]

    run(main)


def test_a_request_read_behind_one_whose_answer_closes_the_connection_is_not_run() -> None:
    """As without pacing (uvicorn starts no request pipelined behind an answer that closes the connection), a
    request that waits its turn on a connection the server closes meanwhile (here a 413: its answer says
    ``connection: close``) never reaches the app."""

    async def main() -> None:
        pacing = every_post()
        async with serving(pacing, max_body_bytes=100) as server:
            conn = server.connect()
            conn.feed(post(content=b"[" + b" " * 200 + b"]"))  # over max_body_bytes
            await taken(pacing)  # taken: its task answers 413 in the next turn
            for _ in range(5):
                pacing.later(Blocker(0.01))  # 50 ms of others' heads ahead of the next
            conn.feed(post(seconds=0.001))  # sent before the answer came: it waits
            (answer,) = await conn.answers()
            assert answer.status == 413 and answer.headers["connection"] == "close" and conn.wire.closed
            await taken(pacing)
            await asyncio.sleep(0.05)
            assert server.paths() == [INFER]  # the second never ran

    run(main)


def test_with_pacing_off_nothing_is_deferred() -> None:
    async def main() -> None:
        for pacing, handed in ((None, 30), (every_post(), 1)):
            # a queue-time bound no stall of the machine reaches: a slow first batch must not refuse the rest
            async with serving(pacing, max_queue_ms=600_000) as server:
                conns = [server.connect() for _ in range(30)]
                for conn in conns:
                    conn.feed(post())
                await asyncio.sleep(0)  # a turn: the requests read in the one before start (or one is taken)
                await asyncio.sleep(0)  # and another (the one taken starts)
                assert len(server.started) == handed
                for conn in conns:
                    (answer,) = await conn.answers()
                    assert seconds_of(answer) == [0.0]

    run(main)


def test_a_client_alone_is_not_paced_even_when_pacing_would_defer_every_head() -> None:
    async def main() -> None:
        pacing = Pacing(slice_s=0.0)  # every head of a run deferred
        async with serving(pacing) as server:
            conn = server.connect()
            for _ in range(5):  # one request at a time, each sent once the last was answered
                conn.feed(post())
                assert not pacing.waiting  # nothing else in progress: taken at once
                (answer,) = await conn.answers()
                assert seconds_of(answer) == [0.0]
                await asyncio.sleep(0)  # the finished request's task leaves the server's set
            assert server.paths() == [INFER] * 5

    run(main)
