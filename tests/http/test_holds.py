"""RetryHolds: a retry before its Retry-After, on the same connection and path, waits until then."""

from __future__ import annotations

import pytest

from modelapi.cli import _settings, build_parser
from modelapi.http.holds import RetryHolds

A = ("10.0.0.1", 50000)
B = ("10.0.0.1", 50001)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
    assert list(holds.until) == [("10.0.0.3", 1, "/p")]


def test_the_flag_and_the_environment_turn_holding_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(build_parser().parse_args(["serve"]), []).hold_early_retries is True
    assert _settings(build_parser().parse_args(["serve", "--no-hold-early-retries"]), []).hold_early_retries is False
    monkeypatch.setenv("MODELAPI_HOLD_EARLY_RETRIES", "false")
    assert _settings(build_parser().parse_args(["serve"]), []).hold_early_retries is False
