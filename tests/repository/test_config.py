"""model.toml: every key's valid forms, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelapi.batching import BatchPolicy
from modelapi.errors import ModelLoadError
from modelapi.repository.config import ConfigError, ModelConfig, VersionPolicy, load_config, parse_config

SOURCE = "iris/model.toml"
DIGEST = "ab" * 32


def load(tmp_path: Path, text: str) -> ModelConfig:
    path = tmp_path / "model.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, source=SOURCE)


def fails(tmp_path: Path, text: str, where: str) -> str:
    """The message of the ConfigError ``text`` raises, checked to name the file and then the field."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: "), message
    assert where in message, message
    return message


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config == ModelConfig()
    assert config.version_policy == VersionPolicy("latest", latest=1)
    assert config.labels == {}
    assert config.canary_percent == 0.0
    assert config.batching is None
    assert config.max_inflight is None
    assert config.inference_timeout_s is None
    assert config.max_rows is None
    assert config.device is None
    assert config.sha256 == {}


def test_every_key(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
version_policy = {{ latest = 2 }}
canary_percent = 10
max_inflight = 64
inference_timeout_s = 30
max_rows = 1000
device = "cuda:1"
batching = "64,2"
[labels]
stable = 3
canary = 4
[sha256]
"3/model.joblib" = "{DIGEST.upper()}"
""",
    )
    assert config.version_policy == VersionPolicy("latest", latest=2)
    assert config.canary_percent == 10.0
    assert isinstance(config.canary_percent, float)
    assert config.max_inflight == 64
    assert config.inference_timeout_s == 30.0
    assert isinstance(config.inference_timeout_s, float)
    assert config.max_rows == 1000
    assert config.device == "cuda:1"
    assert config.batching == BatchPolicy(True, 64, 2.0)
    assert dict(config.labels) == {"stable": 3, "canary": 4}
    assert dict(config.sha256) == {"3/model.joblib": DIGEST}  # stored lower-case


def test_config_is_read_only_and_hashable(tmp_path: Path) -> None:
    config = load(tmp_path, "[labels]\nstable = 1\n")
    with pytest.raises(TypeError):
        config.labels["stable"] = 2  # type: ignore[index]
    hash(config)
    labels = {"stable": 1}
    built = ModelConfig(labels=labels)
    labels["stable"] = 2  # a copy was taken
    assert built.labels["stable"] == 1
    assert built == config


def test_unknown_key_names_the_field_and_the_known_ones(tmp_path: Path) -> None:
    message = fails(tmp_path, "canary_precent = 10\n", "unknown key canary_precent")
    assert "canary_percent" in message and "version_policy" in message
    fails(tmp_path, "version_policy = { latest = 1, newest = 2 }\n", "unknown key version_policy.newest")
    fails(tmp_path, "batching = { max_rows = 8 }\n", "unknown key batching.max_rows")
    fails(tmp_path, '"odd key" = 1\n', 'unknown key "odd key"')


def test_not_toml_and_unreadable(tmp_path: Path) -> None:
    fails(tmp_path, "max_rows = \n", "not valid TOML")
    (tmp_path / "model.toml").write_bytes(b"max_rows = 5  # caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match=f"^{SOURCE}: not valid TOML: not UTF-8"):
        load_config(tmp_path / "model.toml", source=SOURCE)
    with pytest.raises(ConfigError, match=f"^{SOURCE}: cannot be read"):
        load_config(tmp_path / "missing.toml", source=SOURCE)
    with pytest.raises(ConfigError, match=f"^{SOURCE}: cannot be read"):
        load_config(tmp_path, source=SOURCE)  # a directory


def test_config_error_is_a_model_load_error_and_source_defaults_to_the_path(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text("max_rows = 0\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=f"^{path}: max_rows: "):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("", VersionPolicy()),
        ("version_policy = { latest = 3 }", VersionPolicy("latest", latest=3)),
        ('version_policy = "all"', VersionPolicy("all")),
        ("version_policy = [3, 1, 3]", VersionPolicy("specific", versions=(1, 3))),
        ("version_policy = [7]", VersionPolicy("specific", versions=(7,))),
    ],
)
def test_version_policy_forms(tmp_path: Path, text: str, policy: VersionPolicy) -> None:
    assert load(tmp_path, text).version_policy == policy


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('version_policy = "latest"', "version_policy: expected { latest = N }"),
        ("version_policy = 2", "version_policy: expected"),
        ("version_policy = []", "version_policy: expected at least one version"),
        ("version_policy = [1, 0]", "version_policy[1]: expected a positive integer version, got 0"),
        ('version_policy = [1, "2"]', "version_policy[1]: expected a positive integer version, got '2'"),
        ("version_policy = [true]", "version_policy[0]: expected a positive integer version, got True"),
        ("version_policy = { latest = 0 }", "version_policy.latest: expected a positive number of versions"),
        ("version_policy = {}", "version_policy.latest: expected a positive number of versions, got None"),
        ("version_policy = { latest = 1.5 }", "version_policy.latest: "),
    ],
)
def test_version_policy_errors(tmp_path: Path, text: str, where: str) -> None:
    fails(tmp_path, text, where)


def test_version_policy_select() -> None:
    available = [5, 1, 3, 3, 2]
    assert VersionPolicy().select(available) == [5]
    assert VersionPolicy("latest", latest=2).select(available) == [3, 5]
    assert VersionPolicy("latest", latest=9).select(available) == [1, 2, 3, 5]
    assert VersionPolicy("all").select(available) == [1, 2, 3, 5]
    assert VersionPolicy("specific", versions=(5, 1, 4)).select(available) == [1, 5]
    assert VersionPolicy("all").select([]) == []
    assert VersionPolicy().select([]) == []


def test_version_policy_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="kind"):
        VersionPolicy("newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latest"):
        VersionPolicy("latest", latest=0)
    with pytest.raises(ValueError, match="positive"):
        VersionPolicy("specific", versions=(0,))


def test_labels(tmp_path: Path) -> None:
    config = load(tmp_path, '[labels]\nstable = 1\n"rc-2.x" = 2\n')
    assert dict(config.labels) == {"stable": 1, "rc-2.x": 2}
    assert config.default_version([1, 2]) == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[labels]\nstable = "three"', "labels.stable: expected a positive integer version, got 'three'"),
        ("[labels]\nstable = 0", "labels.stable: expected a positive integer version, got 0"),
        ("[labels]\nstable = -1", "labels.stable: expected a positive integer version, got -1"),
        ("[labels]\nstable = true", "labels.stable: expected a positive integer version, got True"),
        ("[labels]\nstable = 1.0", "labels.stable: expected a positive integer version, got 1.0"),
        ('[labels]\n"bad label" = 1', 'labels."bad label": invalid label name'),
        ('[labels]\n"-x" = 1', "labels.-x: invalid label name"),  # -x is a bare TOML key
        ('labels = "stable"', "labels: expected a table"),
    ],
)
def test_label_errors(tmp_path: Path, text: str, where: str) -> None:
    fails(tmp_path, text, where)


def test_default_version() -> None:
    config = ModelConfig(labels={"stable": 2})
    assert config.default_version([1, 2, 3]) == 2
    assert config.default_version([1, 3]) == 3  # the stable version is not ready: the newest ready
    assert config.default_version([]) is None
    assert ModelConfig().default_version([4, 2]) == 4


@pytest.mark.parametrize("percent", ["0", "0.5", "50", "100", "100.0"])
def test_canary_percent_range(tmp_path: Path, percent: str) -> None:
    config = load(tmp_path, f"canary_percent = {percent}\n[labels]\ncanary = 2\n")
    assert config.canary_percent == float(percent)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("-1", "canary_percent: expected a percentage from 0 to 100, got -1.0"),
        ("100.5", "canary_percent: expected a percentage from 0 to 100, got 100.5"),
        ('"10"', "canary_percent: expected a percentage from 0 to 100, got '10'"),
        ("true", "canary_percent: expected a percentage from 0 to 100, got True"),
        ("nan", "canary_percent: expected a percentage from 0 to 100, got nan"),
        ("inf", "canary_percent: expected a percentage from 0 to 100, got inf"),
    ],
)
def test_canary_percent_errors(tmp_path: Path, value: str, where: str) -> None:
    fails(tmp_path, f"canary_percent = {value}\n[labels]\ncanary = 2\n", where)


def test_canary_percent_needs_a_canary_label(tmp_path: Path) -> None:
    fails(tmp_path, "canary_percent = 10\n[labels]\nstable = 1\n", "canary_percent: a canary share needs a 'canary'")
    assert load(tmp_path, "canary_percent = 0\n").canary_percent == 0.0  # no share, no label needed


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("", None),
        ('batching = "off"', BatchPolicy(False, 1024, 0.0)),
        ('batching = "on"', BatchPolicy(True, 1024, 0.0)),
        ('batching = "64"', BatchPolicy(True, 64, 0.0)),
        ('batching = "64,2.5"', BatchPolicy(True, 64, 2.5)),
        ("batching = false", BatchPolicy(False)),
        ("batching = true", BatchPolicy(True)),
        ("batching = { max_batch_size = 8, max_delay_ms = 2 }", BatchPolicy(True, 8, 2.0)),
        ("batching = { enabled = false }", BatchPolicy(False, 1024, 0.0)),
        ("[batching]\nmax_batch_size = 16\n", BatchPolicy(True, 16, 0.0)),
    ],
)
def test_batching_forms(tmp_path: Path, text: str, policy: BatchPolicy | None) -> None:
    assert load(tmp_path, text).batching == policy


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('batching = "sometimes"', "batching: batching 'sometimes': expected off, on, MAX_ROWS"),
        ('batching = "64,soon"', "batching: batching '64,soon'"),
        ('batching = "-4"', "batching: batching '-4'"),
        ("batching = 64", 'batching: expected "off", "on", "MAX_ROWS[,DELAY_MS]" or a table, got 64'),
        ('batching = { enabled = "yes" }', "batching.enabled: expected true or false, got 'yes'"),
        ("batching = { max_batch_size = 0 }", "batching.max_batch_size: expected a positive integer, got 0"),
        ('batching = { max_delay_ms = "2" }', "batching.max_delay_ms: expected milliseconds, got '2'"),
        ("batching = { max_delay_ms = 20000 }", "batching: max_delay_ms must be between 0 and 10000"),
        ("batching = { max_delay_ms = -1 }", "batching: max_delay_ms must be between 0 and 10000"),
    ],
)
def test_batching_errors(tmp_path: Path, text: str, where: str) -> None:
    fails(tmp_path, text, where)


@pytest.mark.parametrize("key", ["max_inflight", "max_rows"])
def test_positive_integer_limits(tmp_path: Path, key: str) -> None:
    assert getattr(load(tmp_path, f"{key} = 7\n"), key) == 7
    for bad in ("0", "-3", "2.5", "true", '"7"'):
        fails(tmp_path, f"{key} = {bad}\n", f"{key}: expected a positive integer, got ")


def test_inference_timeout(tmp_path: Path) -> None:
    assert load(tmp_path, "inference_timeout_s = 0.25\n").inference_timeout_s == 0.25
    for bad in ("0", "-1", "true", '"30"', "inf", "nan"):
        fails(tmp_path, f"inference_timeout_s = {bad}\n", "inference_timeout_s: expected a positive number of seconds")


def test_max_queue_ms(tmp_path: Path) -> None:
    assert load(tmp_path, "max_queue_ms = 150\n").max_queue_ms == 150.0
    for bad in ("0", "-1", "true", '"100"', "inf", "nan"):
        fails(tmp_path, f"max_queue_ms = {bad}\n", "max_queue_ms: expected a positive number of milliseconds")


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_forms(tmp_path: Path, device: str) -> None:
    assert load(tmp_path, f'device = "{device}"\n').device == device


@pytest.mark.parametrize("device", ['"gpu"', '"CUDA"', '"cuda:"', '"cuda:x"', '""', "0"])
def test_device_errors(tmp_path: Path, device: str) -> None:
    fails(tmp_path, f"device = {device}\n", "device: expected cpu, cuda or cuda:N")


def test_sha256_forms(tmp_path: Path) -> None:
    config = load(tmp_path, f'[sha256]\n"3/model.joblib" = "{DIGEST}"\n"2/sub/model.onnx" = "{"0" * 64}"\n')
    assert dict(config.sha256) == {"3/model.joblib": DIGEST, "2/sub/model.onnx": "0" * 64}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f'"3/model.joblib" = "{DIGEST[:-1]}"', 'sha256."3/model.joblib": expected a SHA-256 digest (64 hex digits)'),
        (f'"3/model.joblib" = "{DIGEST}0"', 'sha256."3/model.joblib": expected a SHA-256 digest'),
        (f'"3/model.joblib" = "{"g" * 64}"', 'sha256."3/model.joblib": expected a SHA-256 digest'),
        ('"3/model.joblib" = 12', 'sha256."3/model.joblib": expected a SHA-256 digest (64 hex digits), got 12'),
        (f'"/etc/model.joblib" = "{DIGEST}"', 'sha256."/etc/model.joblib": expected a path inside'),
        (f'"../other/1/model.joblib" = "{DIGEST}"', 'sha256."../other/1/model.joblib": expected a path inside'),
        (f'"3/./model.joblib" = "{DIGEST}"', 'sha256."3/./model.joblib": expected a path inside'),
        (f'"3//model.joblib" = "{DIGEST}"', 'sha256."3//model.joblib": expected a path inside'),
        (f'"3\\\\model.joblib" = "{DIGEST}"', 'sha256."3\\\\model.joblib": expected a path inside'),
    ],
)
def test_sha256_errors(tmp_path: Path, text: str, where: str) -> None:
    fails(tmp_path, f"[sha256]\n{text}\n", where)


def test_sha256_must_be_a_table(tmp_path: Path) -> None:
    fails(tmp_path, f'sha256 = "{DIGEST}"\n', "sha256: expected a table")


def test_parse_config_takes_parsed_data() -> None:
    assert parse_config({"max_rows": 3}, SOURCE).max_rows == 3
    with pytest.raises(ConfigError, match=f"^{SOURCE}: max_rows: "):
        parse_config({"max_rows": "3"}, SOURCE)
