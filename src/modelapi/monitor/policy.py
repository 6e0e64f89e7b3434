"""Each model's monitoring settings: the server's (Settings) under the model's own ``[monitor]`` table.

model.toml wins where it says something: ``log_predictions``, ``sensitive``, ``reference`` (relative to the
model's directory), ``reference_rows``, ``retention_days``, ``max_bytes``. A model's table is read when the
policy is first asked for and again whenever one of its versions turns READY (a reload, a ``--watch`` edit).
A malformed model.toml keeps the last policy read (the repository reports the error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..repository.config import ConfigError, MonitorConfig, load_config
from ..repository.layout import is_repository
from ..settings import Settings, parse_reference

log = logging.getLogger("modelapi.monitor")


@dataclass(frozen=True)
class ModelPolicy:
    rate: float
    sensitive: frozenset[str]
    reference: Path | None
    reference_rows: int
    retention_s: float
    max_bytes: int


class Policies:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roots = [Path(m) for m in settings.models if Path(m).is_dir() and is_repository(Path(m))]
        self._references: dict[str | None, Path] = {}
        for value in settings.reference:
            name, path = parse_reference(value)
            self._references[name] = Path(path)
        self._tables: dict[str, tuple[MonitorConfig, Path | None]] = {}
        self._policies: dict[str, ModelPolicy] = {}

    def _read(self, name: str) -> tuple[MonitorConfig, Path | None]:
        for root in self.roots:
            directory = root / name
            toml = directory / "model.toml"
            if not directory.is_dir():
                continue
            if toml.is_file():
                try:
                    return load_config(toml, f"{name}/model.toml").monitor, directory
                except ConfigError:
                    return self._tables.get(name, (MonitorConfig(), directory))
            return MonitorConfig(), directory
        return MonitorConfig(), None

    def refresh(self, name: str) -> ModelPolicy:
        table, directory = self._tables[name] = self._read(name)
        s = self.settings
        reference = self._references.get(name, self._references.get(None))
        if table.reference is not None and directory is not None:
            reference = directory / table.reference
        policy = ModelPolicy(
            rate=table.log_predictions if table.log_predictions is not None else s.log_predictions,
            sensitive=frozenset(table.sensitive),
            reference=reference,
            reference_rows=table.reference_rows or s.reference_rows,
            retention_s=(table.retention_days or s.log_retention_days) * 86400,
            max_bytes=table.max_bytes or s.log_max_bytes,
        )
        self._policies[name] = policy
        return policy

    def get(self, name: str) -> ModelPolicy:
        policy = self._policies.get(name)
        return policy if policy is not None else self.refresh(name)

    def any_enabled(self) -> bool:
        """Whether any model may log: the server's rate, or a model.toml's in a repository served."""
        if self.settings.log_predictions > 0:
            return True
        for root in self.roots:
            for toml in root.glob("*/model.toml"):
                try:
                    rate = load_config(toml).monitor.log_predictions
                except ConfigError:
                    continue
                if rate:
                    return True
        return False
