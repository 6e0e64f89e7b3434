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


def test_digests_are_normalised() -> None:
    digest = "AB" * 32
    assert Settings(sha256=[digest]).sha256 == ["ab" * 32]
