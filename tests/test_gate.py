"""The gate on its own: the in-flight count and the expected-wait bound, both decided before a body is read."""

from __future__ import annotations

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


def test_an_expected_wait_over_the_budget_is_refused_with_retry_after() -> None:
    gate = ModelGate(max_inflight=100, max_queue_s=0.05)
    gate.enter("m", expected_wait_s=0.04)
    with pytest.raises(Overloaded) as refused:
        gate.enter("m", expected_wait_s=0.06)
    assert "max_queue_ms" in refused.value.detail and refused.value.headers["retry-after"] == "1"
    with pytest.raises(Overloaded) as refused:
        gate.enter("m", expected_wait_s=2.5)
    assert refused.value.headers["retry-after"] == "3"  # the wait, rounded up
    gate.enter("m", max_queue_s=5.0, expected_wait_s=2.5)  # a model's own budget (model.toml) wins
    assert gate.inflight == {"m": 2}
    assert ModelGate(10).enter("m", expected_wait_s=100.0) is None  # no budget: no time bound
