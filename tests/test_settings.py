from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelapi.settings import Settings


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.host == "127.0.0.1"
    assert s.trust_pickle is False
    assert s.sha256 == []


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELAPI_PORT", "9123")
    monkeypatch.setenv("MODELAPI_MODELS", '["a.skops", "b.onnx"]')
    monkeypatch.setenv("MODELAPI_TRUST_PICKLE", "true")
    s = Settings()
    assert s.port == 9123
    assert s.models == ["a.skops", "b.onnx"]
    assert s.trust_pickle is True


def test_keyword_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELAPI_PORT", "9123")
    assert Settings(port=9999).port == 9999


def test_an_empty_environment_variable_unsets_an_optional_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # the container image sets MODELAPI_METRICS_PORT=9090; an empty value turns the operations port off
    monkeypatch.setenv("MODELAPI_METRICS_PORT", "9090")
    assert Settings().metrics_port == 9090
    monkeypatch.setenv("MODELAPI_METRICS_PORT", "")
    monkeypatch.setenv("MODELAPI_GRPC_PORT", " ")
    assert Settings().metrics_port is None and Settings().grpc_port is None


def test_bad_values_are_refused_with_the_field_name() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        Settings(sha256=["not-hex"])
    with pytest.raises(ValidationError, match="port"):
        Settings(port=70000)
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="loud")
    with pytest.raises(ValidationError, match="max_queue_ms"):  # no bound is unset, not infinite
        Settings(max_queue_ms=float("inf"))


def test_digests_are_normalised() -> None:
    digest = "AB" * 32
    assert Settings(sha256=[digest]).sha256 == ["ab" * 32]


def test_access_log_refusals_per_s_is_a_count_0_or_unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().access_log_refusals_per_s == 100
    assert Settings(access_log_refusals_per_s=0).access_log_refusals_per_s == 0
    assert Settings(access_log_refusals_per_s=" Unbounded ").access_log_refusals_per_s is None
    assert Settings(access_log_refusals_per_s=None).access_log_refusals_per_s is None  # Python's "unbounded"
    monkeypatch.setenv("MODELAPI_ACCESS_LOG_REFUSALS_PER_S", "250")
    assert Settings().access_log_refusals_per_s == 250
    monkeypatch.setenv("MODELAPI_ACCESS_LOG_REFUSALS_PER_S", "unbounded")
    assert Settings().access_log_refusals_per_s is None
    monkeypatch.delenv("MODELAPI_ACCESS_LOG_REFUSALS_PER_S")
    for bad in (-1, "-1", "1.5", 2.5, "", "lots", "\u00b2"):
        with pytest.raises(ValidationError, match="access_log_refusals_per_s"):
            Settings(access_log_refusals_per_s=bad)
