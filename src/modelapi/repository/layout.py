"""Scanning a model repository directory: which models and versions it holds, and a fingerprint of each.

The layout, for a repository ``DIR``::

    DIR/iris/model.toml            optional settings (config.py); a malformed one makes the model unusable
    DIR/iris/1/model.skops         a version: a directory named by a positive integer (no leading zeros)
    DIR/iris/2/model.onnx          ... holding exactly one model file, sidecars (*.examples.json,
    DIR/iris/2/model.examples.json     *.signature.json) beside it
    DIR/iris/3/MLmodel             ... or being itself an MLflow model directory
    DIR/churn.skops                a loose model file: model "churn", version 1
    DIR/wine/MLmodel               a loose MLflow directory: model "wine", version 1

Names starting with ``.`` or ending with ``.tmp``, ``.part``, ``.partial`` or ``~`` are ignored at every level.
That is the write-then-rename convention: write ``DIR/iris/3.tmp/`` (or ``DIR/churn.skops.part``) in full, then
rename it into place, so a scan never sees a half-written version.

Scanning reads no model bytes beyond ``is_model_file``'s sniff of ``.json``/``.txt`` files and ``stat`` calls for
the fingerprints, so it is cheap enough to repeat on a timer: a version whose fingerprint is unchanged need not
be reloaded. Problems are recorded, never raised (only a missing ``DIR`` raises), so one bad model never stops the
others; paths in messages are relative to ``DIR`` and ``/``-separated.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import ModelLoadError
from ..models.registry import NAME, SIDECAR_SUFFIXES, is_model_file
from .config import _NAME_RULE, ConfigError, ModelConfig, load_config

_VERSION = re.compile(r"^[1-9][0-9]*$")
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", "~")
_CONFIG = "model.toml"
_MLMODEL = "MLmodel"


@dataclass(frozen=True)
class VersionSource:
    """One usable version: what to load, and a fingerprint that changes when any of its files does."""

    version: int
    artefact: Path  # absolute path to load: a model file, or an MLflow directory
    relpath: str  # the artefact's path inside the repository, "/"-separated
    fingerprint: Hashable


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk, before its version policy is applied (``selected()`` applies it)."""

    name: str
    directory: Path | None  # DIR/<name>/; None for a loose artefact (a file or an MLflow directory in DIR)
    config: ModelConfig | None  # ModelConfig() without model.toml; None when model.toml is malformed
    config_fingerprint: Hashable  # model.toml's (size, mtime_ns), or None without one
    versions: Mapping[int, VersionSource] = field(default_factory=dict, hash=False)
    errors: Mapping[int, str] = field(default_factory=dict, hash=False)  # version -> why it is unusable
    error: str | None = None  # why the model as a whole is unusable (a malformed model.toml, an unreadable dir)
    # entries in the model directory that are neither versions nor model.toml (``iris/old/``); never fatal
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", MappingProxyType(dict(sorted(self.versions.items()))))
        object.__setattr__(self, "errors", MappingProxyType(dict(sorted(self.errors.items()))))

    def selected(self) -> list[int]:
        """The versions to serve: the version policy applied to the usable versions (none without a config)."""
        return [] if self.config is None else self.config.version_policy.select(self.versions)


@dataclass(frozen=True)
class RepositoryScan:
    """What one scan of ``root`` found: the models, and the problems not tied to one model's versions."""

    root: Path
    models: Mapping[str, ModelSource] = field(default_factory=dict, hash=False)  # in sorted name order
    errors: tuple[str, ...] = ()  # bad names, duplicates, stray directories, and every model's warnings

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", MappingProxyType(dict(sorted(self.models.items()))))


def is_repository(path: Path) -> bool:
    """A directory that is not itself an MLflow model (one holding only loose model files is a repository)."""
    return path.is_dir() and not _is_mlflow(path)


def scan(root: Path) -> RepositoryScan:
    """Every model in the repository at ``root``; raises ``ModelLoadError`` only when ``root`` is no directory."""
    root, entries = _listed_root(root)
    models, errors = _build(root, entries)
    for model in models.values():
        errors.extend(model.warnings)
    return RepositoryScan(root, models, tuple(errors))


def scan_model(root: Path, name: str) -> ModelSource | None:
    """Rescan the one model ``name``, as ``scan`` would see it; None when it is gone (or invalid, or duplicated)."""
    root, entries = _listed_root(root)
    # only entries that could be this model are looked at: DIR/<name>/ and DIR/<name>.<suffix>
    candidates = [e for e in entries if name in (e.name, e.stem)]
    return _build(root, candidates)[0].get(name)


def _listed_root(root: Path) -> tuple[Path, list[Path]]:
    root = Path(root).absolute()
    try:
        return root, _entries(root)
    except FileNotFoundError:
        raise ModelLoadError(f"model repository {root} does not exist") from None
    except NotADirectoryError:
        raise ModelLoadError(f"model repository {root} is not a directory") from None
    except OSError as exc:
        raise ModelLoadError(f"model repository {root} cannot be read: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # as for _is_mlflow
        return False


def _is_mlflow(path: Path) -> bool:
    try:
        return (path / _MLMODEL).is_file()
    except OSError:  # an unreadable directory (is_file lets EACCES through): whoever lists it reports why
        return False


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(_IGNORED_SUFFIXES)


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not _ignored(p.name))


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _build(root: Path, entries: list[Path]) -> tuple[dict[str, ModelSource], list[str]]:
    """Models out of top-level ``entries``; names claimed by several entries are errors and none is served."""
    errors: list[str] = []
    claims: dict[str, list[Path]] = {}
    for entry in entries:
        try:
            is_dir, is_model = entry.is_dir(), entry.is_file() and is_model_file(entry)
        except OSError as exc:
            errors.append(f"{entry.name}: cannot be read: {_reason(exc)}")
            continue
        if is_dir:
            name = entry.name
            if not _is_mlflow(entry) and not _is_model_dir(entry):
                errors.append(f"{name}/: expected version directories 1/, 2/ ... or an MLmodel file")
                continue
        elif is_model:
            name = entry.stem
        else:
            continue  # a sidecar, a README: not a model
        if NAME.match(name) is None:
            shown = _rel(root, entry) + ("/" if entry.is_dir() else "")
            errors.append(f"{shown}: invalid model name {name!r}; {_NAME_RULE}")
            continue
        claims.setdefault(name, []).append(entry)
    models: dict[str, ModelSource] = {}
    for name, paths in claims.items():
        if len(paths) > 1:
            listed = ", ".join(_rel(root, p) + ("/" if p.is_dir() else "") for p in paths)
            errors.append(f"{name}: defined more than once ({listed}); none of them is served")
        elif paths[0].is_dir() and not _is_mlflow(paths[0]):
            models[name] = _model_dir(root, name, paths[0])
        else:
            loose = paths[0]
            version = VersionSource(1, loose, _rel(root, loose), _fingerprint(root, loose))
            models[name] = ModelSource(name, None, ModelConfig(), None, {1: version})
    return models, errors


def _is_model_dir(path: Path) -> bool:
    # an empty directory counts: it is most likely a model whose first version is still being written (1.tmp/)
    try:
        entries = _entries(path)
    except OSError:
        return True  # let _model_dir report why it cannot be read
    return not entries or any(e.name == _CONFIG or (e.name.isdigit() and e.is_dir()) for e in entries)


def _model_dir(root: Path, name: str, directory: Path) -> ModelSource:
    config: ModelConfig | None = ModelConfig()
    error: str | None = None
    toml = directory / _CONFIG
    config_fp: Hashable = None
    try:
        st = toml.stat()
        config_fp = (st.st_size, st.st_mtime_ns)
    except OSError:
        pass  # no model.toml: the defaults
    else:
        try:
            config = load_config(toml, source=_rel(root, toml))
        except ConfigError as exc:
            config, error = None, str(exc)
    versions: dict[int, VersionSource] = {}
    errors: dict[int, str] = {}
    warnings: list[str] = []
    try:
        entries = _entries(directory)
    except OSError as exc:
        error = error or f"{name}/: cannot be read: {_reason(exc)}"
        entries = []
    for entry in entries:
        rel = _rel(root, entry)
        if _VERSION.match(entry.name) and _is_dir(entry):
            version = int(entry.name)
            try:
                versions[version] = _version(root, version, entry)
            except _Unusable as exc:
                errors[version] = str(exc)
            except OSError as exc:
                errors[version] = f"{rel}/: cannot be read: {_reason(exc)}"
        elif _is_dir(entry):
            warnings.append(f"{rel}/: not a version directory (versions are named 1, 2, ... without leading zeros)")
        elif entry.name != _CONFIG and entry.is_file() and is_model_file(entry):
            warnings.append(f"{rel}: a model file outside a version directory is not served; move it into {name}/1/")
    return ModelSource(name, directory, config, config_fp, versions, errors, error, tuple(warnings))


class _Unusable(Exception):
    """Why one version directory cannot be served."""


def _version(root: Path, version: int, directory: Path) -> VersionSource:
    rel = _rel(root, directory)
    if _is_mlflow(directory):
        artefact = directory
    else:
        try:
            files = [e for e in _entries(directory) if e.is_file()]
        except OSError as exc:
            raise _Unusable(f"{rel}/: cannot be read: {_reason(exc)}") from None
        found = [f for f in files if is_model_file(f)]
        if len(found) != 1:
            listed = ", ".join(f.name for f in (found or files)) or "it is empty"
            what = "several model files" if found else "no model file and no MLmodel file"
            raise _Unusable(f"{rel}/: {what} ({listed}); a version holds exactly one model")
        artefact = found[0]
    return VersionSource(version, artefact, _rel(root, artefact), _fingerprint(root, directory))


def _fingerprint(root: Path, path: Path) -> Hashable:
    """(relpath, size, mtime_ns, inode) of every file under ``path``, or of a loose file and its sidecars;
    sorted. The inode catches a file renamed into place with the same size within the clock's granularity."""
    files: list[Path] = []
    if path.is_dir():
        for top, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not _ignored(d)]  # prune in place, so os.walk skips them
            files.extend(Path(top, f) for f in names if not _ignored(f))
    else:
        files = [path, *(path.with_name(path.stem + suffix) for suffix in SIDECAR_SUFFIXES)]
    stats = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue  # a sidecar that is absent, a file removed while scanning (the next scan sees it)
        if stat.S_ISREG(st.st_mode):
            stats.append((_rel(root, file), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(stats))
