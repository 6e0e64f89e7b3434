"""``model.toml``: one model's settings in a model repository (``DIR/<name>/model.toml``), parsed with tomllib.

Every key is optional::

    version_policy = { latest = 2 }    # default { latest = 1 }; or "all"; or a list such as [1, 3]
    canary_percent = 10                # share of unversioned requests sent to the "canary" label's version
    max_inflight = 64                  # per-model overrides of the server's limits
    inference_timeout_s = 30
    max_rows = 1000
    max_queue_ms = 200                 # longest a request may wait for the model (503 with Retry-After)
    device = "cpu"
    batching = "off"                   # "off" | "on" | "MAX_ROWS[,DELAY_MS]" | { max_batch_size = 64, max_delay_ms = 2 } | { enabled = false }
    [labels]
    stable = 3
    canary = 4
    [sha256]
    "3/model.joblib" = "<64 hex digits>"
    [monitor]                          # the prediction log (docs/monitoring.md)
    log_predictions = 0.1              # share of rows logged (wins over --log-predictions)
    sensitive = ["ssn"]                # inputs never logged
    reference = "train.parquet"        # training data, relative to DIR/<name>/ (.parquet or .csv)
    reference_rows = 1000              # without a file: the first N logged rows
    retention_days = 30
    max_bytes = 1073741824

The file is checked strictly, because a typo that silently falls back to a default (``canary_precent``) would
serve the wrong thing: unknown keys are errors, and every error is a ``ConfigError`` whose message names the
file and the field, e.g. ``iris/model.toml: labels.stable: expected a positive integer version, got 'three'``.
Nothing here touches the model files; the repository scan (``layout.py``) reads this file and reports its errors
per model, so one bad ``model.toml`` never stops the others from being served.
"""  # noqa: E501

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

from ..batching import BatchPolicy, parse_policy
from ..errors import ModelLoadError
from ..models.registry import NAME

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")
_NAME_RULE = "names start with a letter or digit and hold up to 128 letters, digits, '_', '.' or '-'"


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


class ConfigError(ModelLoadError):
    """A ``model.toml`` that cannot be read or does not follow the format; the message names file and field."""

    title = "Model Configuration Error"


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions present are served: the ``latest`` N, ``all``, or the ``specific`` ``versions``."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"version policy kind must be latest, all or specific, got {self.kind!r}")
        if self.latest < 1:
            raise ValueError(f"version policy latest must be at least 1, got {self.latest}")
        if any(v < 1 for v in self.versions):
            raise ValueError(f"versions are positive integers, got {list(self.versions)}")
        object.__setattr__(self, "versions", tuple(sorted(set(self.versions))))

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve out of ``available``, ascending (a missing specific version is simply absent)."""
        present = sorted(set(available))
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return [v for v in present if v in self.versions]
        return present[-self.latest :]


@dataclass(frozen=True)
class MonitorConfig:
    """``[monitor]``: per-model prediction log settings; ``None`` fields fall back to the server's."""

    log_predictions: float | None = None
    sensitive: tuple[str, ...] = ()
    reference: str | None = None
    reference_rows: int | None = None
    retention_days: float | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    """One model's settings; the defaults are what a model without ``model.toml`` gets.

    ``labels`` and ``sha256`` are stored as read-only mappings (copies of what was passed), so a config can be
    shared and compared between scans without anyone changing it underneath; they take no part in the hash.
    """

    version_policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=_empty, hash=False)
    canary_percent: float = 0.0
    batching: BatchPolicy | None = None
    max_inflight: int | None = None
    inference_timeout_s: float | None = None
    max_rows: int | None = None
    max_queue_ms: float | None = None
    device: str | None = None
    sha256: Mapping[str, str] = field(default_factory=_empty, hash=False)
    monitor: MonitorConfig = MonitorConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "sha256", MappingProxyType(dict(self.sha256)))

    def default_version(self, ready: Iterable[int]) -> int | None:
        """The version unversioned requests get: the ``stable`` label's when it is ready, else the newest ready."""
        ready = set(ready)
        stable = self.labels.get("stable")
        if stable is not None and stable in ready:
            return stable
        return max(ready) if ready else None


def load_config(path: Path, source: str | None = None) -> ModelConfig:
    """Read and parse ``path``; ``source`` is how messages name the file (default: the path as given)."""
    source = source if source is not None else str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes before parsing, and lets this ValueError through
        raise ConfigError(f"{source}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read: {exc.strerror or exc}") from None
    return parse_config(data, source)


def parse_config(data: Mapping[str, Any], source: str) -> ModelConfig:
    """A ``ModelConfig`` from parsed TOML ``data``; ``source`` names the file in messages."""
    p = _Parser(source)
    p.known_keys(data, "", _KEYS)
    labels: dict[str, int] = {}
    for label, version in p.table(data.get("labels", {}), "labels", "[labels] stable = 3").items():
        if NAME.match(label) is None:
            p.fail(_field("labels", label), f"invalid label name; {_NAME_RULE}")
        labels[label] = p.positive_int(version, _field("labels", label), "a positive integer version")
    canary = p.number(data.get("canary_percent", 0.0), "canary_percent", "a percentage from 0 to 100")
    if not 0 <= canary <= 100:
        p.fail("canary_percent", f"expected a percentage from 0 to 100, got {canary!r}")
    if canary > 0 and "canary" not in labels:
        p.fail("canary_percent", "a canary share needs a 'canary' label naming its version ([labels] canary = 4)")
    device = data.get("device")
    if device is not None and (not isinstance(device, str) or _DEVICE.match(device) is None):
        p.fail("device", f"expected cpu, cuda or cuda:N, got {device!r}")
    timeout = data.get("inference_timeout_s")
    if timeout is not None and p.number(timeout, "inference_timeout_s", "a positive number of seconds") <= 0:
        p.fail("inference_timeout_s", f"expected a positive number of seconds, got {timeout!r}")
    queue_ms = data.get("max_queue_ms")
    if queue_ms is not None and p.number(queue_ms, "max_queue_ms", "a positive number of milliseconds") <= 0:
        p.fail("max_queue_ms", f"expected a positive number of milliseconds, got {queue_ms!r}")
    return ModelConfig(
        version_policy=p.version_policy(data.get("version_policy")),
        labels=labels,
        canary_percent=float(canary),
        batching=p.batching(data.get("batching")),
        max_inflight=p.optional_int(data.get("max_inflight"), "max_inflight"),
        inference_timeout_s=None if timeout is None else float(timeout),
        max_rows=p.optional_int(data.get("max_rows"), "max_rows"),
        max_queue_ms=None if queue_ms is None else float(queue_ms),
        device=device,
        sha256=p.sha256(data.get("sha256", {})),
        monitor=p.monitor(data.get("monitor", {})),
    )


_KEYS = tuple(ModelConfig.__dataclass_fields__)  # every field of ModelConfig is a key, under its own name
_BATCHING_KEYS = ("enabled", "max_batch_size", "max_delay_ms")
_MONITOR_KEYS = tuple(MonitorConfig.__dataclass_fields__)


def _field(prefix: str, key: str) -> str:
    """A dotted field name as TOML would write it: ``labels.stable``, ``sha256."3/model.joblib"``."""
    shown = key if _BARE_KEY.match(key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{prefix}.{shown}" if prefix else shown


class _Parser:
    """Type checks that raise ``ConfigError`` naming ``source`` and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {where}: {message}")

    def known_keys(self, data: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                where = _field(prefix, key)
                raise ConfigError(f"{self.source}: unknown key {where}; known keys: {', '.join(sorted(known))}")

    def table(self, value: Any, where: str, example: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"expected a table such as {example}, got {value!r}")
        return value

    def positive_int(self, value: Any, where: str, what: str = "a positive integer") -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(where, f"expected {what}, got {value!r}")
        return int(value)

    def optional_int(self, value: Any, where: str) -> int | None:
        return None if value is None else self.positive_int(value, where)

    def number(self, value: Any, where: str, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(where, f"expected {what}, got {value!r}")
        return float(value)

    def version_policy(self, value: Any) -> VersionPolicy:
        where = "version_policy"
        if value is None:
            return VersionPolicy()
        if value == "all":
            return VersionPolicy("all")
        if isinstance(value, list):
            if not value:
                self.fail(where, "expected at least one version in the list")
            versions = [
                self.positive_int(v, f"{where}[{i}]", "a positive integer version") for i, v in enumerate(value)
            ]
            return VersionPolicy("specific", versions=tuple(versions))
        if isinstance(value, Mapping):
            self.known_keys(value, where, ("latest",))
            latest = self.positive_int(value.get("latest"), f"{where}.latest", "a positive number of versions")
            return VersionPolicy("latest", latest=latest)
        self.fail(where, f'expected {{ latest = N }}, "all" or a list of versions such as [1, 3], got {value!r}')

    def batching(self, value: Any) -> BatchPolicy | None:
        where = "batching"
        if value is None:
            return None
        if isinstance(value, bool):
            return BatchPolicy(enabled=value)
        try:
            if isinstance(value, str):
                return parse_policy(value, BatchPolicy())
            if isinstance(value, Mapping):
                self.known_keys(value, where, _BATCHING_KEYS)
                enabled = value.get("enabled", True)
                if not isinstance(enabled, bool):
                    self.fail(f"{where}.enabled", f"expected true or false, got {enabled!r}")
                size = self.positive_int(value.get("max_batch_size", 1024), f"{where}.max_batch_size")
                delay = self.number(value.get("max_delay_ms", 0.0), f"{where}.max_delay_ms", "milliseconds")
                return BatchPolicy(enabled, size, delay)
        except ValueError as exc:
            self.fail(where, str(exc))
        self.fail(where, f'expected "off", "on", "MAX_ROWS[,DELAY_MS]" or a table, got {value!r}')

    def sha256(self, value: Any) -> dict[str, str]:
        digests: dict[str, str] = {}
        for key, digest in self.table(value, "sha256", '[sha256] "3/model.joblib" = "<64 hex digits>"').items():
            where = _field("sha256", key)
            parts = key.split("/")
            if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
                self.fail(where, 'expected a path inside the model\'s directory such as "3/model.joblib"')
            if not isinstance(digest, str) or _HEX64.match(digest) is None:
                self.fail(where, f"expected a SHA-256 digest (64 hex digits), got {digest!r}")
            digests[key] = digest.lower()
        return digests

    def monitor(self, value: Any) -> MonitorConfig:
        where = "monitor"
        table = self.table(value, where, "[monitor] log_predictions = 0.1")
        self.known_keys(table, where, _MONITOR_KEYS)
        rate = table.get("log_predictions")
        if rate is not None and not 0 <= self.number(rate, f"{where}.log_predictions", "a share from 0 to 1") <= 1:
            self.fail(f"{where}.log_predictions", f"expected a share from 0 to 1, got {rate!r}")
        sensitive = table.get("sensitive", [])
        if not isinstance(sensitive, list) or not all(isinstance(v, str) and v for v in sensitive):
            self.fail(f"{where}.sensitive", f'expected a list of input names such as ["ssn"], got {sensitive!r}')
        reference = table.get("reference")
        if reference is not None and (
            not isinstance(reference, str) or not reference.lower().endswith((".parquet", ".csv"))
        ):
            self.fail(f"{where}.reference", f"expected a .parquet or .csv file name, got {reference!r}")
        if isinstance(reference, str) and (reference.startswith("/") or ".." in reference.split("/")):
            self.fail(f"{where}.reference", 'expected a path inside the model\'s directory such as "train.parquet"')
        days = table.get("retention_days")
        if days is not None and self.number(days, f"{where}.retention_days", "a positive number of days") <= 0:
            self.fail(f"{where}.retention_days", f"expected a positive number of days, got {days!r}")
        return MonitorConfig(
            log_predictions=None if rate is None else float(rate),
            sensitive=tuple(sensitive),
            reference=reference,
            reference_rows=self.optional_int(table.get("reference_rows"), f"{where}.reference_rows"),
            retention_days=None if days is None else float(days),
            max_bytes=self.optional_int(table.get("max_bytes"), f"{where}.max_bytes"),
        )
