"""The gate on its own: the in-flight count and the expected-wait bound, both decided before a body is read."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers.clock import Clock
from modelapi import gate as gate_module
from modelapi.errors import Overloaded
from modelapi.gate import RETURN_SHARE, ModelGate


@pytest.fixture
def tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule's rules at a share of a tenth of the served rate, where 2,000 served a second make 200 returns
    a second (the default share is tested on its own)."""
    monkeypatch.setattr(gate_module, "RETURN_SHARE", 0.1)


def test_the_in_flight_limit_refuses_with_retry_after() -> None:
    gate = ModelGate(max_inflight=2)
    gate.enter("m")
    gate.enter("m")
    with pytest.raises(Overloaded) as refused:
        gate.enter("m")
    assert refused.value.headers == {"retry-after": "1"} and "max_inflight" in refused.value.detail
    gate.enter("other")  # per model
    gate.leave("m")
    gate.enter("m")


def test_an_expected_wait_over_the_budget_is_refused_with_retry_after() -> None:
    gate = ModelGate(max_inflight=100, max_queue_s=0.05)
    gate.enter("m", expected_s=0.04)
    with pytest.raises(Overloaded) as refused:
        gate.enter("m", expected_s=0.06)
    assert "max_queue_ms" in refused.value.detail and refused.value.headers["retry-after"] == "1"
    with pytest.raises(Overloaded) as refused:
        gate.enter("m", expected_s=2.5)
    assert refused.value.headers["retry-after"] == "3"  # the wait, rounded up
    gate.enter("m", max_queue_s=5.0, expected_s=2.5)  # a model's own budget (model.toml) wins
    assert gate.inflight == {"m": 2}
    assert ModelGate(10).enter("m", expected_s=100.0) is None  # no budget: no time bound


def _retry_after(gate: ModelGate, model: str = "m", client: object = None, **kwargs: float) -> int:
    with pytest.raises(Overloaded) as refused:
        gate.enter(model, client=client, **kwargs)
    return int(refused.value.headers["retry-after"])


def test_refused_clients_are_told_to_come_back_spread_over_the_next_seconds() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    # nothing served yet: 20 returns a second are booked, the next 20 in the second after, ...
    waits = [_retry_after(gate) for _ in range(60)]
    assert waits == sorted(waits) and [waits.count(s) for s in (1, 2, 3)] == [20, 20, 20]


@pytest.mark.usefixtures("tenth")
def test_the_schedule_follows_the_served_rate_and_empties_with_time() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    assert _retry_after(gate) == 1
    _serve(gate, clock, 2000)  # 2,000 calls served in the next second: 200 returns a second may be booked
    waits = [_retry_after(gate) for _ in range(600)]
    assert waits == sorted(waits) and [waits.count(s) for s in (1, 2, 3)] == [200, 200, 200]
    gate.inflight.clear()
    other = ModelGate(max_inflight=0, clock=clock)
    assert _retry_after(other, "x") == 1  # per gate and per model
    clock.now += 10.0  # the booked returns are past: the next refused client may come back in a second
    gate.enter("m")
    assert _retry_after(gate) == 1


def test_retry_after_is_at_least_the_expected_wait_and_at_most_30_seconds() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=10**6, max_queue_s=0.1, clock=clock)
    assert _retry_after(gate, expected_s=4.2) == 5
    waits = [_retry_after(gate, expected_s=0.5) for _ in range(1000)]
    assert max(waits) == 30 and waits[0] == 1


def test_the_time_a_request_waited_to_be_read_counts_against_the_budget() -> None:
    gate = ModelGate(max_inflight=100, max_queue_s=0.05)
    gate.enter("m", expected_s=0.03, waited_s=0.015)
    with pytest.raises(Overloaded) as refused:
        gate.enter("m", expected_s=0.03, waited_s=0.03)
    assert "after the 30 ms it waited to be read" in refused.value.detail
    assert refused.value.headers["retry-after"] == "1"


def test_a_flood_past_the_longest_retry_after_does_not_book_the_schedule_past_it() -> None:
    """The schedule is booked at most MAX_RETRY_AFTER_S ahead: refusals after the flood has passed are told to
    come back in a second, not the 30 s a schedule booked hours ahead would still give."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    waits = [_retry_after(gate) for _ in range(10_000)]  # 20 a second: 500 s of returns asked for
    assert max(waits) == 30
    clock.now += 31.0
    assert _retry_after(gate) == 1


def test_refusal_says_what_enter_would_and_changes_nothing() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, max_queue_s=0.1, clock=clock)
    assert gate.refusal("m") is None
    gate.enter("m")
    detail, at_least = gate.refusal("m") or ("", 0)
    assert "max_inflight" in detail and at_least == 1
    assert gate.refusal("m", limit=2, expected_s=0.5) == (
        "model 'm' would answer this request in about 500 ms, more than the queue-time limit of 100 ms (max_queue_ms); "
        "retry shortly",
        1,
    )
    assert (gate.refusal("m", limit=2, expected_s=2.5) or ("", 0))[1] == 3  # the wait, rounded up
    # the wait since the request's head arrived counts, and is named
    waited = gate.refusal("m", limit=2, expected_s=0.05, waited_s=0.3)
    assert waited is not None and "in about 50 ms after the 300 ms it waited to be read" in waited[0]
    assert gate.inflight == {"m": 1} and gate.returns == {} and not gate.refusing  # nothing counted or booked
    assert gate.retry_after("m", 1) == {"retry-after": "1"} and "m" in gate.returns  # this one books


def test_the_gate_says_it_is_refusing_from_a_refusal_on_and_when_it_gave_the_last() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    assert not gate.refusing
    gate.enter("m")
    with pytest.raises(Overloaded):
        gate.enter("m")
    assert gate.refusing and gate.refused_at == 100.0
    clock.now += 0.5
    gate.enter("other")  # an admission does not clear it (DataPlane.shed does, once a while has passed)
    assert gate.refusing
    gate.retry_after("m", 1)  # a refusal given on the head books its Retry-After: the gate knows when
    assert gate.refused_at == 100.5


def _serve(gate: ModelGate, clock: Clock, calls: int, seconds: float = 1.0) -> None:
    """``calls`` calls leave the gate one after the other over the next ``seconds`` (the served rate is measured
    from when they leave)."""
    start = clock.now
    for i in range(1, calls + 1):
        clock.now = start + seconds * i / calls  # (not added up: the last one lands on the second exactly)
        gate.leave("m")
        gate.enter("m")


@pytest.mark.usefixtures("tenth")
def test_a_sustained_flood_keeps_its_returns_spread_and_a_busy_server_after_it_says_a_second() -> None:
    """Each second of a flood, its refusals are spread over the seconds the return rate needs for them, however
    many come at once, and the schedule holds no more than the last second's and this second's; once the flood is
    over, a refusal of a server that is merely busy is told to come back in a second, not to wait behind the
    returns the flood booked (its clients came back at their places, or left)."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    assert _retry_after(gate) == 1
    for _ in range(5):  # 2,000 served and 600 refused at once each second: 200 returns a second, over 3 s
        _serve(gate, clock, 2000)
        waits = [_retry_after(gate) for _ in range(600)]
        assert waits == sorted(waits) and max(waits) <= 6
        assert max(Counter(waits).values()) <= 201  # a second's returns, no more, told to come back together
    for _ in range(2):  # the flood is over: the server is busy, refusing a few a second
        _serve(gate, clock, 2000)
        waits = [_retry_after(gate) for _ in range(5)]
    assert waits == [1] * 5


@pytest.mark.usefixtures("tenth")
def test_refusals_that_come_together_as_the_window_turns_are_spread_as_any() -> None:
    """A burst of refusals across the turn of the window the rates are measured over: those after the turn are
    not all told the same wait (the schedule's bound at the turn), but each the next place after the last."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    assert _retry_after(gate) == 1
    _serve(gate, clock, 2000)
    assert _retry_after(gate) == 1  # the window turns: 2,000 served a second, 200 returns a second
    _serve(gate, clock, 2000, 0.99)
    waits = []
    for _ in range(2000):  # 2,000 refusals in 20 ms, the window turning halfway
        clock.now += 0.00001
        waits.append(_retry_after(gate))
    assert waits == sorted(waits) and max(Counter(waits).values()) <= 201 and max(waits) == 10


@pytest.mark.usefixtures("tenth")
def test_a_floods_first_refusals_are_spread_at_the_rate_served_before_it() -> None:
    """The served rate is measured as calls leave, so it is known at a flood's first refusal: refused clients
    are spread at a tenth of it from the start, not at the 20 a second of a model that served nothing (which told
    the first second's refusals of a flood of 640 clients to come back up to 22 s later)."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    _serve(gate, clock, 2000)  # 2,000 calls a second, and no refusal yet
    waits = [_retry_after(gate) for _ in range(600)]
    assert waits == sorted(waits) and max(Counter(waits).values()) <= 201 and max(waits) <= 3


@pytest.mark.usefixtures("tenth")
def test_quiet_time_is_not_taken_for_slow_serving() -> None:
    """A window of the served rate ends where the model went idle: after a quiet spell, the rate is still what
    the model served while busy."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    _serve(gate, clock, 2000)
    clock.now += 10.0  # quiet
    _serve(gate, clock, 100, 0.05)  # busy again for 50 ms
    waits = [_retry_after(gate) for _ in range(600)]
    assert max(Counter(waits).values()) <= 201 and max(waits) <= 3


@pytest.mark.usefixtures("tenth")
def test_a_model_whose_batches_take_longer_than_the_idle_gap_is_measured() -> None:
    """Calls that leave together every 0.3 s, with the next batch in flight meanwhile, are a model serving, not
    one idle between its calls: 512 a batch is about 1,700 a second, 170 returns a second."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1024, clock=clock)
    for _ in range(1024):
        gate.enter("m")
    for _ in range(5):
        clock.now += 0.3
        for _ in range(512):
            gate.leave("m")
            gate.enter("m")
    waits = [_retry_after(gate) for _ in range(510)]
    assert waits == sorted(waits) and max(Counter(waits).values()) <= 171 and max(waits) == 3


@pytest.mark.usefixtures("tenth")
def test_a_quiet_spell_with_a_call_held_in_flight_is_not_taken_for_slow_serving() -> None:
    """A call held over the quiet (a slow body) keeps the gate from emptying, but a gap of over a second is idle
    all the same."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=2, clock=clock)
    gate.enter("m")
    gate.enter("m")  # held until after the quiet
    _serve(gate, clock, 2000)
    clock.now += 10.0
    _serve(gate, clock, 100, 0.05)
    waits = [_retry_after(gate) for _ in range(600)]
    assert max(Counter(waits).values()) <= 201 and max(waits) <= 3


def test_by_default_refused_clients_come_back_at_three_in_a_hundred_of_the_served_rate() -> None:
    """A refusal and its client's return cost a busy server far more than the refusal alone (docs/overload.md),
    so a flood's clients are told to come back at 3 % of the served rate: 60 a second at 2,000 served."""
    assert RETURN_SHARE == 0.03
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    _serve(gate, clock, 2000)
    waits = [_retry_after(gate, client=i) for i in range(600)]
    assert waits == sorted(waits) and [waits.count(s) for s in range(1, 11)] == [60] * 10


def _flood(gate: ModelGate, clock: Clock, clients: int, seconds: int, named: bool) -> list[int]:
    """``clients`` clients that wait the Retry-After they are told, each refused again on its return (the model
    stays full, 2,000 served a second), for ``seconds``: the refusals of each second."""
    back = dict.fromkeys(range(clients), clock.now)  # each client's next request
    per_second = []
    for _ in range(seconds):
        _serve(gate, clock, 2000)
        now, refused = clock.now, 0
        for client, at in sorted(back.items(), key=lambda item: item[1]):
            if at <= now:
                back[client] = now + _retry_after(gate, client=client if named else None)
                refused += 1
        per_second.append(refused)
    return per_second


@pytest.mark.usefixtures("tenth")
def test_a_lasting_flood_of_clients_that_stay_connected_comes_back_at_the_schedules_rate() -> None:
    """2,000 clients, each refused again whenever it comes back: with their connections named, each keeps its
    place until it comes back, so every refusal is booked after all those still waiting and the flood comes back
    at the schedule's 200 a second; without (each refusal's place forgotten after a window or two), the waits
    stay short and the same clients come back two to three times as often."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    named = _flood(gate, clock, 2000, 40, named=True)
    assert max(named[20:]) <= 260 and sum(named[20:]) <= 20 * 220
    other = ModelGate(max_inflight=1, clock=clock)
    other.enter("m")
    unnamed = _flood(other, clock, 2000, 40, named=False)
    assert sum(unnamed[20:]) >= 2 * sum(named[20:])


@pytest.mark.usefixtures("tenth")
@pytest.mark.parametrize("then", ["closed", "admitted", "waiting"])
def test_a_refused_client_that_leaves_or_comes_back_frees_its_place(then: str) -> None:
    """100 clients refused at once are told to come back over 5 s (20 returns a second, nothing served). Once they
    have closed their connections, or come back and been admitted, and the refusals' window has passed, the next
    refusal is told 1 s; while they still wait, it is told to come back after the 40 places still kept."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    assert [_retry_after(gate, client=i) for i in range(100)] == [s for s in range(1, 6) for _ in range(20)]
    if then == "closed":
        for i in range(100):
            gate.release(i)
    elif then == "admitted":  # back early (a held retry let go into room, a client that does not wait): served
        gate.leave("m")
        for i in range(100):
            gate.enter("m", client=i)
            gate.leave("m")
        gate.enter("m")
    clock.now += 1.5
    _retry_after(gate, client="x")
    clock.now += 1.5
    assert _retry_after(gate, client="y") == (3 if then == "waiting" else 1)


@pytest.mark.usefixtures("tenth")
def test_a_client_refused_again_keeps_one_place_and_places_are_let_go_once_their_time_comes() -> None:
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    for _ in range(3):
        for i in range(50):
            _retry_after(gate, client=i)
    assert len(gate.places) == 50  # one place per connection, its latest
    clock.now += 31.0
    _retry_after(gate)
    assert gate.places == {}  # a place whose time came is not remembered


def test_past_the_most_connections_kept_a_refusal_is_spread_as_an_unnamed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "MAX_PLACES", 10)
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    waits = [_retry_after(gate, client=i) for i in range(40)]
    assert len(gate.places) == 10 and waits == [1] * 20 + [2] * 20  # each booked its place, as before


@pytest.mark.usefixtures("tenth")
def test_a_client_refused_again_and_again_keeps_its_memory_bounded() -> None:
    """A connection that retries at once, holds off, is refused some 50,000 times a second, each refusal booked
    up to 30 s ahead: the places it let go are not kept until their time."""
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("m")
    for _ in range(20_000):
        clock.now += 0.00002
        _retry_after(gate, client="again")
    assert len(gate.places) == 1 and len(gate.returns["m"].places) <= 66


def test_at_the_most_connections_kept_places_due_of_another_model_make_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "MAX_PLACES", 10)
    clock = Clock(100.0)
    gate = ModelGate(max_inflight=1, clock=clock)
    gate.enter("a")
    gate.enter("b")
    for i in range(10):
        _retry_after(gate, "a", client=i)
    clock.now += 3600.0  # their time long past, and "a" refused no more
    _retry_after(gate, "b", client="b1")
    assert list(gate.places) == ["b1"]


def test_a_detail_kept_formatted_is_the_one_for_its_figures_and_budget() -> None:
    """Details are formatted once per model and figures: two budgets, two wordings; the same figures, the same."""
    gate = ModelGate(8, None)
    one = gate.refusal("m", None, 0.1, 0.2, 0.0)
    two = gate.refusal("m", None, 0.15, 0.2, 0.0)
    waited = gate.refusal("m", None, 0.1, 0.2, 0.0125)
    assert one is not None and two is not None and waited is not None
    assert "limit of 100 ms" in one[0] and "limit of 150 ms" in two[0]
    assert "about 200 ms after the 12 ms it waited to be read" in waited[0]  # (12.5 rounds to even, as ".0f")
    assert gate.refusal("m", None, 0.1, 0.2, 0.0) == one
