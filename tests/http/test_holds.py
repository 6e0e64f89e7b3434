"""RetryHolds: a retry before its Retry-After, on the same connection and path, waits until then and is refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from helpers.clock import Clock
from modelapi.cli import _settings, build_parser
from modelapi.events import Events, Observer, RequestRejected
from modelapi.http.holds import EARLY_S, RETURN_S, ROOM, RetryHolds, connection
from modelapi.http.middleware import RequestContextMiddleware
from modelapi.security.slow_clients import CONNECTION, IN_PROGRESS

A = ("10.0.0.1", 50000)
B = ("10.0.0.1", 50001)


def test_a_retry_before_its_retry_after_is_held_for_the_rest_of_it_once() -> None:
    clock = Clock()
    holds = RetryHolds(clock)
    holds.refused(A, "/v2/models/m/infer", b"2")
    clock.now += 0.5
    assert holds.hold(B, "/v2/models/m/infer") == 0.0  # another connection
    assert holds.hold(A, "/v2/models/other/infer") == 0.0  # another path
    assert holds.hold(A, "/v2/models/m/infer") == 1.5
    assert holds.hold(A, "/v2/models/m/infer") == 0.0  # held once per refusal
    holds.refused(A, "/v2/models/m/infer", b"1")
    clock.now += 3
    assert holds.hold(A, "/v2/models/m/infer") == 0.0  # came back after its wait: not held


def test_retry_after_zero_forgets_what_the_connection_was_told() -> None:
    """A held retry's answer says "retry now" (Retry-After: 0): the request after it is not held."""
    holds = RetryHolds(Clock())
    holds.refused(A, "/p", b"5")
    holds.refused(A, "/p", b"0")
    assert holds.until == {} and not holds.due(A, "/p") and holds.hold(A, "/p") == 0.0


def test_unknown_clients_and_dates_are_not_remembered() -> None:
    holds = RetryHolds(Clock())
    holds.refused(None, "/p", b"1")
    holds.refused(A, "/p", b"Wed, 21 Oct 2026 07:28:00 GMT")
    assert holds.until == {} and holds.hold(None, "/p") == 0.0


def test_at_most_max_held_are_remembered_and_expired_ones_make_room() -> None:
    clock = Clock()
    holds = RetryHolds(clock, max_held=3)
    for port in range(5):
        holds.refused(("10.0.0.2", port), "/p", b"1")
    assert len(holds.until) == 3
    clock.now += 2  # all three expired: the next refusal sweeps them
    holds.refused(("10.0.0.3", 1), "/p", b"1")
    assert list(holds.until) == [(("10.0.0.3", 1), "/p")]


def test_the_flag_and_the_environment_turn_holding_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(build_parser().parse_args(["serve"]), []).hold_early_retries is True
    assert _settings(build_parser().parse_args(["serve", "--no-hold-early-retries"]), []).hold_early_retries is False
    monkeypatch.setenv("MODELAPI_HOLD_EARLY_RETRIES", "false")
    assert _settings(build_parser().parse_args(["serve"]), []).hold_early_retries is False


# work-conserving holds: a held retry goes on early once the server is about to run out of work (http/holds.py)

INFER = "/v2/models/m/infer"


def _scope(client: tuple[str, int], in_progress: set[str]) -> dict[str, Any]:
    return {
        "type": "http", "method": "POST", "path": INFER, "raw_path": INFER.encode(), "query_string": b"",
        "headers": [], "scheme": "http", "server": ("test", 80), "client": client, "root_path": "",
        IN_PROGRESS: in_progress,
    }  # fmt: skip


class _Rejections(Observer):
    def __init__(self, seen: list[RequestRejected]) -> None:
        self.seen = seen

    def request_rejected(self, event: RequestRejected) -> None:
        self.seen.append(event)


class Server:
    """The middleware with holds over an app that answers what it is told, and a set standing for uvicorn's
    requests in progress (each request is in it while it runs, as its task is)."""

    def __init__(self, room: bool = True) -> None:
        self.room = room
        self.rejected: list[RequestRejected] = []
        events = Events(_Rejections(self.rejected))
        self.holds = RetryHolds(room=lambda: self.room)
        self.in_progress: set[str] = set()
        self.answers: list[tuple[int, str | None]] = []
        self.seen: list[str] = []  # the requests the app ran
        self.retry_after: dict[str, str | None] = {}  # each request's answer's Retry-After

        async def inner(scope: Scope, receive: Receive, send: Send) -> None:
            self.seen.append(scope["state"]["request_id"])
            status, retry_after = self.answers.pop(0) if self.answers else (200, None)
            headers = {"retry-after": retry_after} if retry_after else None
            await JSONResponse({}, status_code=status, headers=headers)(scope, receive, send)

        self.app = RequestContextMiddleware(inner, max_body_bytes=100, holds=self.holds, events=events)

    async def request(self, name: str, client: tuple[str, int] = A) -> tuple[int, float]:
        """One request named ``name`` (its request id), in progress while it runs: its status and time taken."""
        scope = _scope(client, self.in_progress)
        scope["headers"] = [(b"x-request-id", name.encode())]
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        self.in_progress.add(name)
        started = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress.discard(name)
        self.retry_after[name] = dict(sent[0]["headers"]).get(b"retry-after", b"").decode() or None
        return sent[0]["status"], time.monotonic() - started

    async def held(self, name: str, client: tuple[str, int] = A, retry_after: str = "30") -> asyncio.Task[Any]:
        """A request refused with ``retry_after``, then its retry at once, held: the retry's task."""
        self.answers.append((503, retry_after))
        assert (await self.request(name + "-refused", client))[0] == 503
        task = asyncio.create_task(self.request(name, client))
        await asyncio.sleep(0.01)
        assert not task.done()
        return task


def test_a_held_retry_is_sent_back_once_the_server_is_about_to_idle_not_before() -> None:
    """Held with Retry-After 30 s: not released while ROOM requests are in progress and not held; released when one
    ends leaving fewer, long before its Retry-After, as a 503 "retry now" that the app never sees; the client's
    next request goes through the app, as any."""

    async def go() -> None:
        server = Server()
        busy = {f"busy{i}" for i in range(ROOM)}
        server.in_progress |= busy  # the server busy with ROOM others
        held = await server.held("retry")
        assert len(server.holds.held) == 1
        await server.request("one")  # ends with ROOM others still in progress: no room
        await asyncio.sleep(0.01)
        assert not held.done() and server.seen == ["retry-refused", "one"]
        server.in_progress.discard("busy0")
        await server.request("two")  # ends leaving ROOM - 1: the server is about to run out of work
        status, took = await asyncio.wait_for(held, 1)
        assert status == 503 and took < 1 and server.retry_after["retry"] == "0" and server.seen[-1] == "two"
        assert server.rejected == [RequestRejected(None, "http", "early_retry", 503)]  # counted, by its reason
        assert server.holds.held == {} and server.holds.until == {}
        status, took = await server.request("retry-again")  # sent again at once: not held, through the app
        assert status == 200 and took < 0.1 and server.seen[-1] == "retry-again"

    asyncio.run(go())


def test_the_request_after_a_released_retry_is_judged_as_any_and_its_early_retry_held_again() -> None:
    async def go() -> None:
        server = Server()
        busy = {f"busy{i}" for i in range(ROOM)}
        server.in_progress |= busy
        held = await server.held("retry")
        server.in_progress -= busy
        server.answers += [(200, None), (503, "30")]  # "ends" is served; the request after the retry refused
        await server.request("ends")  # nothing else in progress: released
        assert (await asyncio.wait_for(held, 1))[0] == 503 and server.holds.until == {}
        assert (await server.request("next"))[0] == 503 and server.seen[-1] == "next"
        assert list(server.holds.until) == [(A, INFER)]  # remembered again: its next retry is held
        again = asyncio.create_task(server.request("again"))
        server.in_progress |= {f"busy{i}" for i in range(ROOM)}
        await asyncio.sleep(0.01)
        assert not again.done()
        again.cancel()

    asyncio.run(go())


def test_no_early_release_while_the_data_plane_has_no_room() -> None:
    """The server is quiet but the model refuses (say, at its in-flight limit): releasing would only buy another
    refusal, so the retry waits its Retry-After, then is refused, unrun."""

    async def go() -> None:
        server = Server(room=False)
        held = await server.held("retry", retry_after="0.3")  # (no room: held however quiet the server is)
        await server.request("ends")
        await asyncio.sleep(0.05)
        assert not held.done()
        status, took = await asyncio.wait_for(held, 2)
        assert status == 503 and took > 0.2 and "retry" not in server.seen  # its timer
        assert server.holds.held == {}

    asyncio.run(go())


def test_the_last_request_to_end_releases_the_oldest_held_first_up_to_room() -> None:
    """Everything else held, one request ends: it releases the ROOM oldest (the next end releases the rest)."""

    async def go() -> None:
        holds = RetryHolds()
        in_progress = {f"busy{i}" for i in range(ROOM)}
        waits = []
        for i in range(ROOM + 2):
            in_progress.add(f"held{i}")
            waits.append(asyncio.create_task(holds.wait(30, in_progress)))
            await asyncio.sleep(0)
        assert len(holds.held) == ROOM + 2
        in_progress -= {f"busy{i}" for i in range(ROOM - 1)}
        holds.ended(in_progress)  # the last busy one ends, still in progress as it does
        await asyncio.sleep(0)
        assert [t.done() for t in waits] == [True] * ROOM + [False, False]
        assert all(0 < t.result() < 1 for t in waits[:ROOM])  # released early: the seconds held
        in_progress -= {f"busy{ROOM - 1}", *(f"held{i}" for i in range(ROOM - 1))}
        holds.ended(in_progress)  # held3 (released) ends: the rest go on
        await asyncio.wait_for(asyncio.gather(*waits), 1)
        assert holds.held == {}

    asyncio.run(go())


def test_retries_held_on_the_head_are_released_as_the_apps_but_are_none_of_the_requests_in_progress() -> None:
    """A retry the HTTP protocol holds itself (``hold_on_head``) has no task: it is not taken off the requests in
    progress as the app's held ones are, it is released oldest first with them, its time coming ends it
    (``False``), cancelling it forgets it, and with room it is not held at all."""

    async def go() -> None:
        holds = RetryHolds()
        in_progress = {f"busy{i}" for i in range(ROOM)}
        on_head = [holds.hold_on_head(30, in_progress, ("10.0.0.1", i)) for i in range(2)]
        assert all(w is not None for w in on_head) and len(holds.on_head) == 2
        in_progress.add("held-by-app")
        by_app = asyncio.create_task(holds.wait(30, in_progress))
        await asyncio.sleep(0)
        assert len(holds.held) == 3 and not by_app.done()  # ROOM busy besides the held: nothing released
        timed = holds.hold_on_head(0.05, in_progress, ("10.0.0.1", 9))
        assert timed is not None
        assert (await asyncio.wait_for(timed, 1)) is False and len(holds.held) == 3
        cancelled = on_head.pop()
        assert cancelled is not None
        cancelled.cancel()
        await asyncio.sleep(0)
        assert len(holds.held) == 2 and len(holds.on_head) == 1
        in_progress -= {"busy0", "busy1", "busy2"}
        holds.ended(in_progress)  # busy3 ends: the one on the head (the older) and the app's are released
        await asyncio.sleep(0)
        assert on_head[0] is not None and on_head[0].result() is True
        assert 0 < (await asyncio.wait_for(by_app, 1)) < 1
        assert holds.held == {} and not holds.on_head
        assert holds.hold_on_head(30, set(), ("10.0.0.1", 10)) is None  # room: not held

    asyncio.run(go())


def test_a_retry_arriving_while_the_server_has_room_is_not_held() -> None:
    async def go() -> None:
        server = Server()
        server.answers.append((503, "30"))
        await server.request("refused")
        status, took = await server.request("retry")  # one other request in progress at most: room
        assert status == 200 and took < 0.1 and server.holds.held == {}

    asyncio.run(go())


def test_a_held_request_cancelled_or_timed_out_leaves_no_waiter() -> None:
    """A held request's task cancelled (a client gone, shutdown's grace period over) or its Retry-After reached:
    its waiter is gone from the held, and no later release counts it."""

    async def go() -> None:
        server = Server()
        server.in_progress |= {f"busy{i}" for i in range(ROOM)}
        gone = await server.held("gone", ("10.0.0.9", 1))
        timed = await server.held("timed", ("10.0.0.9", 2), retry_after="0.1")
        assert len(server.holds.held) == 2
        gone.cancel()
        await asyncio.sleep(0)
        assert len(server.holds.held) == 1
        assert (await asyncio.wait_for(timed, 1))[0] == 503
        assert server.holds.held == {} and "timed" not in server.seen

    asyncio.run(go())


def test_without_the_servers_requests_in_progress_a_retry_waits_its_retry_after() -> None:
    """A scope without IN_PROGRESS (not uvicorn's protocol): nothing tells when the server has room."""

    async def go() -> None:
        holds = RetryHolds()
        started = time.monotonic()
        assert await holds.wait(0.1, None) >= 0.09
        assert time.monotonic() - started >= 0.09 and holds.held == {}

    asyncio.run(go())


class Requests:
    """Requests as uvicorn runs them (each task in the set of requests in progress until a callback, run after it is
    done, takes it out) over one ``RetryHolds``, their ends told to it as the middleware tells them."""

    def __init__(self) -> None:
        self.holds = RetryHolds()
        self.in_progress: set[asyncio.Task[Any]] = set()
        self.go_on = asyncio.Event()

    def start(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.in_progress.add(task)
        task.add_done_callback(self.in_progress.discard)
        return task

    async def busy(self) -> None:
        """A request that ends once ``go_on`` is set."""
        await self.go_on.wait()
        if self.holds.held or self.holds.settling:  # still in progress as it ends
            self.holds.ended(self.in_progress)

    async def retry(self, after_go_on: bool = False) -> float:
        """A retry held for 30 s (once ``go_on`` is set, with ``after_go_on``); the seconds it was held."""
        if after_go_on:
            await self.go_on.wait()
        return await self.holds.wait(30, self.in_progress)


def test_requests_that_end_together_release_what_is_held() -> None:
    """ROOM + 1 requests end in one turn of the loop, with retries held: each sees the others still in progress as
    it ends (they leave uvicorn's set only in a callback after they are done), so none of them finds the server
    about to idle. The held retries are released all the same, a turn later, not at their Retry-After."""

    async def go() -> None:
        requests = Requests()
        workers = [requests.start(requests.busy()) for _ in range(ROOM + 1)]
        await asyncio.sleep(0)
        retries = [requests.start(requests.retry()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert len(requests.holds.held) == 3  # ROOM + 1 others in progress: no room
        requests.go_on.set()  # every busy request ends in the same turn
        assert all(0 < held < 1 for held in await asyncio.wait_for(asyncio.gather(*retries), 1))
        await asyncio.gather(*workers)

    asyncio.run(go())


def test_retries_held_in_the_turn_the_last_requests_ended_are_released() -> None:
    """Requests end and, in the same turn, retries arrive and are held: they see the ended ones still in progress,
    and nothing that is left ends to release them. A turn later they are released."""

    async def go() -> None:
        requests = Requests()
        workers = [requests.start(requests.busy()) for _ in range(ROOM)]
        retries = [requests.start(requests.retry(after_go_on=True)) for _ in range(3)]
        await asyncio.sleep(0)
        requests.go_on.set()  # the workers end, then the retries come, in one turn
        assert all(0 < held < 1 for held in await asyncio.wait_for(asyncio.gather(*retries), 1))
        await asyncio.gather(*workers)

    asyncio.run(go())


def test_a_new_connection_is_not_held_for_what_an_earlier_one_on_its_address_and_port_was_told() -> None:
    """The kernel reuses a client's ephemeral ports: a new connection from the same address and port as a refused
    one is another connection, and its first request is not held. modelapi's HTTP protocol names each connection
    in the scope; where a server does not, the client's address and port stand for it."""
    holds = RetryHolds(Clock())
    first = _scope(A, set())
    first[CONNECTION] = 1
    holds.refused(connection(first), INFER, b"30")
    again = _scope(A, set())
    again[CONNECTION] = 2  # the same address and port, a new connection
    assert not holds.due(connection(again), INFER) and holds.hold(connection(again), INFER) == 0.0
    assert holds.due(connection(first), INFER) and holds.hold(connection(first), INFER) == 30.0
    unnamed = _scope(A, set())
    holds.refused(connection(unnamed), INFER, b"30")
    assert holds.hold(connection(_scope(A, set())), INFER) == 30.0


def test_refusals_whose_time_has_passed_are_forgotten_as_requests_come() -> None:
    """Connections refused and closed never come back (a new connection is another): each request forgets the oldest
    remembered refusal once its time has passed, so the table empties after a flood."""
    clock = Clock()
    holds = RetryHolds(clock)
    for n in range(3):
        holds.refused(n, INFER, b"1")
    holds.refused(3, INFER, b"30")
    clock.now += 2
    for _ in range(3):
        assert holds.hold(99, INFER) == 0.0
    assert list(holds.until) == [(3, INFER)]  # not yet due
    assert holds.hold(3, INFER) == 28.0


def test_released_retries_count_as_in_progress_until_their_clients_come_back() -> None:
    """A released retry is answered in a turn and ends: were it not counted until its client's next request came,
    each such end would release the next ones, and every held retry would be sent back in one lull."""

    async def go() -> None:
        server = Server()
        busy = {f"busy{i}" for i in range(ROOM)}
        server.in_progress |= busy
        clients = [("10.0.0.5", port) for port in range(20)]
        held = [await server.held(f"retry{i}", client) for i, client in enumerate(clients)]
        server.in_progress -= busy
        await server.request("ends")  # nothing else in progress: room for ROOM
        await asyncio.sleep(0.02)  # well within RETURN_S
        sent_back = [task for task in held if task.done()]
        assert len(sent_back) == ROOM and all(task.result()[0] == 503 for task in sent_back)
        back = clients[held.index(sent_back[0])]
        assert (await server.request("back", back))[0] == 200  # one client came back and was served: one more goes
        await asyncio.sleep(0.02)
        assert sum(task.done() for task in held) == ROOM + 1
        await asyncio.sleep(RETURN_S * 1.5)  # the others did not come back: their places are free again
        assert ROOM + 1 < sum(task.done() for task in held) <= 3 * ROOM
        for task in held:
            task.cancel()

    asyncio.run(go())


def test_a_retry_only_just_early_is_not_held() -> None:
    clock = Clock()
    holds = RetryHolds(clock)
    holds.refused(A, INFER, b"1")
    clock.now += 1 - EARLY_S / 2  # a client's timer a little early
    assert holds.hold(A, INFER) == 0.0


def test_when_the_server_stops_every_held_retry_is_answered_and_none_is_held_any_more() -> None:
    async def go() -> None:
        server = Server()
        server.in_progress |= {f"busy{i}" for i in range(ROOM)}
        held = [await server.held(f"retry{i}", ("10.0.0.6", i)) for i in range(3)]
        server.holds.stop()
        answers = await asyncio.wait_for(asyncio.gather(*held), 1)
        assert [status for status, _ in answers] == [503] * 3 and server.holds.held == {}
        server.answers.append((503, "30"))
        assert (await server.request("refused", B))[0] == 503
        status, took = await server.request("retry", B)  # stopping: not held
        assert status == 200 and took < 0.1

    asyncio.run(go())
