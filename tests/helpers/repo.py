"""Build model repositories on disk for tests, with tiny real scikit-learn models.

Usage::

    from helpers.repo import ModelRepo, skops_bytes

    repo = ModelRepo(tmp_path / "models")
    repo.version("iris", 1, skops_bytes("v1"))      # DIR/iris/1/model.skops, written under 1.tmp/ then renamed
    repo.toml("iris", "version_policy = 'all'")     # DIR/iris/model.toml
    settings = Settings(models=[str(repo.root)])

Each model is a ``LogisticRegression`` on three features whose class labels carry a ``tag``
(``"<tag>-lo"``/``"<tag>-hi"``), so an answer tells which artefact produced it (``label_of``). Artefact bytes
are cached per tag: training runs once per test session.
"""

from __future__ import annotations

import functools
import io
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, TypeVar

import joblib
import numpy as np
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from modelapi.events import (
    BatchRun,
    Events,
    ModelStateChanged,
    Observer,
    RequestFinished,
    RequestRejected,
    RequestStarted,
)
from modelapi.repository.registry import Repository
from modelapi.repository.shared import SharedState
from modelapi.repository.sources import Sources
from modelapi.settings import Settings

_E = TypeVar("_E")

N_FEATURES = 3


def _data(tag: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, N_FEATURES))
    y = np.where(x[:, 0] > 0, f"{tag}-hi", f"{tag}-lo")
    return x, y


def classifier(tag: str) -> LogisticRegression:
    """A fitted classifier whose labels are ``<tag>-lo`` and ``<tag>-hi`` (``hi`` when the first feature > 0)."""
    x, y = _data(tag)
    return LogisticRegression().fit(x, y)


@functools.cache
def skops_bytes(tag: str) -> bytes:
    """A ``.skops`` file of ``classifier(tag)``."""
    data: bytes = sio.dumps(classifier(tag))
    return data


@functools.cache
def warmup_fails_skops_bytes() -> bytes:
    """A ``.skops`` file that loads (a fitted LogisticRegression) but whose every predict raises: its
    coefficients have fewer columns than the features it says it takes, so the warm-up fails."""
    est = classifier("broken")
    est.coef_ = est.coef_[:, :-1].copy()
    data: bytes = sio.dumps(est)
    return data


def joblib_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


class SlowClassifier(LogisticRegression):  # type: ignore[misc]
    """A classifier that sleeps ``delay_s_`` before answering rows whose first feature is at least 100.

    Pickled with joblib (so it needs trust); its warm-up row (zeros) answers at once.
    """

    delay_s_: float = 0.0

    def predict(self, X: Any) -> Any:
        self._maybe_sleep(X)
        return super().predict(X)

    def predict_proba(self, X: Any) -> Any:
        self._maybe_sleep(X)
        return super().predict_proba(X)

    def _maybe_sleep(self, X: Any) -> None:
        if (np.asarray(X)[:, 0] >= 100).any():
            time.sleep(self.delay_s_)


@functools.cache
def slow_joblib_bytes(delay_s: float = 1.0, tag: str = "slow") -> bytes:
    x, y = _data(tag)
    est = SlowClassifier().fit(x, y)
    est.delay_s_ = delay_s
    return joblib_bytes(est)


def label_of(outputs: dict[str, np.ndarray]) -> str:
    """The label of the first row of an answer (its tag tells which artefact answered)."""
    return str(outputs["label"][0])


def rows(*first: float) -> dict[str, np.ndarray]:
    """Inputs for the repository's models: one row per value of the first feature (others zero)."""
    x = np.zeros((len(first), N_FEATURES))
    x[:, 0] = first
    return {"input": x}


class ModelRepo:
    """A model repository directory, changed the way an operator should: write elsewhere, then rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._mtime = 0

    def _touch(self, path: Path) -> None:
        # every write gets a later mtime than the last one: file timestamps come from a coarse clock, and two
        # same-size writes within one tick would otherwise look the same to a (size, mtime) fingerprint
        now = max(time.time_ns(), self._mtime + 10_000_000)
        self._mtime = now
        os.utime(path, ns=(now, now))

    def version(self, name: str, version: int, data: bytes, filename: str = "model.skops") -> Path:
        """``DIR/name/version/filename``: written in ``version.tmp/``, then renamed into place."""
        model_dir = self.root / name
        model_dir.mkdir(exist_ok=True)
        staging = model_dir / f"{version}.tmp"
        staging.mkdir()
        artefact = staging / filename
        artefact.write_bytes(data)
        self._touch(artefact)
        final = model_dir / str(version)
        os.rename(staging, final)
        return final / filename

    def replace(self, path: Path, data: bytes) -> None:
        """New bytes for an existing artefact, by an atomic rename over it."""
        part = path.with_name(path.name + ".part")
        part.write_bytes(data)
        self._touch(part)
        os.replace(part, path)

    def overwrite(self, path: Path, data: bytes) -> None:
        """New bytes written in place (what a copy that is still running looks like)."""
        path.write_bytes(data)
        self._touch(path)

    def remove(self, name: str, version: int) -> None:
        shutil.rmtree(self.root / name / str(version))

    def loose(self, name: str, data: bytes, suffix: str = ".skops") -> Path:
        """A loose artefact ``DIR/<name><suffix>``: model ``name``, version 1."""
        path = self.root / f"{name}{suffix}"
        part = path.with_name(path.name + ".part")
        part.write_bytes(data)
        self._touch(part)
        os.rename(part, path)
        return path

    def toml(self, name: str, text: str) -> Path:
        """``DIR/name/model.toml`` with ``text`` (replaced atomically)."""
        model_dir = self.root / name
        model_dir.mkdir(exist_ok=True)
        path = model_dir / "model.toml"
        part = model_dir / "model.toml.part"
        part.write_text(text, encoding="utf-8")
        self._touch(part)
        os.replace(part, path)
        return path


class EventLog(Observer):
    """Every event, in order; ``states(model)`` lists a model's ``(version, state)`` changes."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def request_started(self, event: RequestStarted) -> None:
        self.events.append(event)

    def request_finished(self, event: RequestFinished) -> None:
        self.events.append(event)

    def request_rejected(self, event: RequestRejected) -> None:
        self.events.append(event)

    def batch_run(self, event: BatchRun) -> None:
        self.events.append(event)

    def model_state_changed(self, event: ModelStateChanged) -> None:
        self.events.append(event)

    def of(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.events if isinstance(e, kind)]

    def states(self, model: str) -> list[tuple[str, str]]:
        return [(e.version, str(e.state)) for e in self.of(ModelStateChanged) if e.model == model]


def repository(
    settings: Settings,
    events: Events | None = None,
    shared: SharedState | None = None,
    rng: random.Random | None = None,
) -> Repository:
    """A repository (not started) for what ``settings`` name."""
    sources = Sources.from_settings(settings, shared)
    return Repository(sources, events=events, grace_period_s=settings.grace_period_s, rng=rng)


def index_of(repo: Repository, name: str) -> dict[str, tuple[str, str]]:
    """``version -> (state, reason)`` of ``name``'s rows in the repository index."""
    return {r["version"]: (str(r["state"]), r["reason"]) for r in repo.index() if r["name"] == name}
