"""The gate on its own: the in-flight count and the expected-wait bound, both decided before a body is read."""

from __future__ import annotations

import time

import pytest

from modelapi.errors import Overloaded
from modelapi.gate import ModelGate


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


def test_an_expected_wait_over_the_budget_is_refused_at_once() -> None:
    """Busy time per finished call is the service time: one call of 0.12 s, then a call already in flight
    makes the next one expect 0.12 s, over a 50 ms budget."""
    gate = ModelGate(max_inflight=100, max_queue_s=0.05)
    assert gate.expected_wait("m") == 0.0
    gate.enter("m")
    gate.begin("m")
    time.sleep(0.12)
    gate.leave("m")
    assert gate.inflight == {}
    gate.enter("m")  # nothing in flight: no wait, whatever the service time
    gate.enter("m")  # one in flight, its body still arriving: no work ahead yet
    gate.leave("m", begun=False)
    gate.begin("m")
    assert 0.1 <= gate.expected_wait("m") < 1.0
    with pytest.raises(Overloaded) as refused:
        gate.enter("m")
    assert "max_queue_ms" in refused.value.detail and refused.value.headers["retry-after"] == "1"
    gate.enter("m", max_queue_s=5.0)  # a model's own budget (model.toml) wins over the server's
    assert gate.inflight == {"m": 2}


def test_idle_time_between_calls_does_not_count_as_service_time() -> None:
    """At light load calls are quick and far apart: the estimate stays about one call's time, not the gap."""
    gate = ModelGate(max_inflight=100, max_queue_s=0.08)
    for _ in range(4):
        gate.enter("m")
        gate.begin("m")
        time.sleep(0.03)
        gate.leave("m")
        time.sleep(0.2)  # idle: had it counted, a call would seem to take over 0.2 s
    gate.enter("m")
    gate.begin("m")
    assert 0.02 < gate.expected_wait("m") < 0.08
    gate.enter("m")  # one ahead, about 30 ms each: within the budget
