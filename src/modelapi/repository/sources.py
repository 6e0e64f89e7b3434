"""Sources: what the repository should serve, read from the operator's settings, the disk and the shared state.

A source is one of the server's model arguments:

- a repository directory (``layout.py``): models by name, versions by number, each with its ``model.toml``;
- a fixed spec: a model file, an MLflow directory or ``module:Class``, served as version 1 (``--name`` names
  these, in order);
- a directory holding one model (a model file, or an MLflow directory, with nothing else that is a model): a
  repository of one loose model, named by ``--name`` when given (what KServe's storage initializer leaves in
  ``/mnt/models``; ``--model-name`` names it too, and leaves a larger repository's names alone);
- models built in Python (``create_app([...])``), served as they are.

``desired`` answers, per model name, a ``Desired``: the versions to serve now (each a ``VersionSpec`` that knows
how to load it and how its files looked), the versions that cannot be loaded and why, labels and canary share.
It reads files only (``stat`` and ``model.toml``), never model bytes, so the repository can ask often. A name
that an operator unloaded (``shared.py``) is wanted with no versions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ..batching import BatchPolicy
from ..errors import ModelLoadError, ModelNotReady
from ..models.base import Model
from ..models.python import is_class_spec
from ..models.registry import load_model
from ..models.trust import Trust, sha256_of
from ..settings import Settings
from .config import ModelConfig
from .layout import ModelSource, VersionSource, is_repository, scan, scan_model
from .shared import SharedState, Snapshot

log = logging.getLogger("modelapi")


class Limits(NamedTuple):
    """Per-version overrides of the server's limits (``None``: the server's)."""

    max_inflight: int | None = None
    inference_timeout_s: float | None = None
    max_rows: int | None = None
    max_queue_s: float | None = None


@dataclass(frozen=True)
class VersionSpec:
    """One version to serve. ``fingerprint`` changes when anything that needs a reload changes (files,
    batching, device, trust); ``unchanged`` re-reads the files' state (``None``: cannot tell)."""

    version: str
    load: Callable[[], Model]
    source: str | None
    fingerprint: Hashable
    batching: BatchPolicy | None  # the operator's explicit policy for this model, else None
    default_batching: BatchPolicy
    limits: Limits = Limits(None, None, None, None)  # noqa: RUF009 (an immutable tuple)
    unchanged: Callable[[], bool | None] = lambda: None
    root: Path | None = None  # the repository directory: never shown to clients

    def public(self, message: str) -> str:
        """``message`` with the server's paths made relative to the repository (load errors name files)."""
        if self.root is None:
            return message
        return _without_root(self.root, message, "", "/")

    def policy_for(self, model: Model) -> BatchPolicy:
        """The operator's policy, else global off, else the model's own ``batching``, else the global policy."""
        if self.batching is not None:
            return self.batching
        base = self.default_batching
        if not base.enabled:
            return base
        own = getattr(model, "batching", None)
        if isinstance(own, BatchPolicy):
            return own
        if own is False:
            return BatchPolicy(False, base.max_batch_size, base.max_delay_ms)
        return base


@dataclass
class Desired:
    name: str
    versions: dict[str, VersionSpec] = field(default_factory=dict)
    failed: dict[str, tuple[str, Hashable]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    canary_percent: float = 0.0
    error: str | None = None


class _Fixed(NamedTuple):
    """A model file, MLflow directory or ``module:Class``, served as version 1 under ``name`` (None: derived)."""

    spec: str
    name: str | None


class Sources:
    def __init__(
        self,
        *,
        roots: Sequence[Path] = (),
        fixed: Sequence[_Fixed] = (),
        models: Sequence[Model] = (),
        settings: Settings | None = None,
        shared: SharedState | None = None,
        aliases: Mapping[Path, str] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.roots = [Path(r) for r in roots]
        # per repository: the name its model is served under while it holds exactly one loose model
        self._aliases = {Path(r): a for r, a in (aliases or {}).items()}
        self._disk_names: dict[str, str] = {}  # a loose model's own name -> its alias, as last scanned
        self.shared = shared
        self._trust = Trust(trust_pickle=self.settings.trust_pickle, sha256=frozenset(self.settings.sha256))
        self._global_batching = self.settings.batch_policy()
        self._overrides = self.settings.batch_overrides()
        self._memory: dict[str, Model] = {}
        for model in models:
            if model.name in self._memory:
                raise ValueError(f"two models are named {model.name!r}; give each a distinct --name")
            self._memory[model.name] = model
        # fixed specs are read once, at start: their names must be known before the server starts
        self._fixed: dict[str, tuple[Model, Path | None]] = {}
        for item in fixed:
            model = load_model(item.spec, name=item.name, trust=self._trust, device=self.settings.device)
            if model.name in self._fixed or model.name in self._memory:
                raise ValueError(f"two models are named {model.name!r}; give each a distinct --name")
            path = None if is_class_spec(item.spec) and not Path(item.spec).exists() else Path(item.spec)
            self._fixed[model.name] = (model, path)
        self._known: set[str] = set()
        self._unloaded: set[str] = set()  # without shared state: this process's own
        self._snapshot = Snapshot(0, frozenset(), {})
        self._checked_overrides = False
        # per (repository, model): the last model.toml that parsed, kept serving while a later edit is malformed
        self._good_configs: dict[tuple[Path, str], ModelConfig] = {}
        self._stale_logged: dict[tuple[Path, str], str] = {}
        self._labels_logged: dict[str, str] = {}  # a label naming no served version, logged once per change
        #: what the last look at the repositories found wrong outside any one model (duplicates, stray files)
        self.problems: list[str] = []
        self._root_names: dict[Path, set[str]] = {}  # the models each repository held at its last good scan

    @classmethod
    def from_settings(cls, settings: Settings, shared: SharedState | None = None) -> Sources:
        """Each model argument is a repository directory or a fixed spec; no argument: the bundled demo model."""
        specs: list[str] = list(settings.models)
        if not specs:
            from ..demo import DEMO_MODEL_PATH

            specs = [str(DEMO_MODEL_PATH)]
        if len(settings.names) > len(specs):
            raise ValueError(
                f"{len(settings.names)} names given for {len(specs)} models; give at most one name per model"
            )
        names: list[str | None] = [*settings.names, *([None] * (len(specs) - len(settings.names)))]
        if settings.model_name is not None:
            if len(specs) > 1:
                raise ValueError(f"--model-name names the only model served; {len(specs)} models are given")
            names[0] = names[0] or settings.model_name
        roots: list[Path] = []
        fixed: list[_Fixed] = []
        aliases: dict[Path, str] = {}
        for spec, name in zip(specs, names, strict=True):
            path = Path(spec)
            if path.is_dir() and is_repository(path):
                if name and _single_loose(path):
                    aliases[path] = name
                elif name and name != settings.model_name:
                    raise ValueError(
                        f"--name {name!r} given for the repository {spec}: a repository's models are named by "
                        "their directories (--name names a directory's model only when it holds one model file "
                        "or one MLflow model)"
                    )
                roots.append(path)
            else:
                fixed.append(_Fixed(spec, name))
        return cls(roots=roots, fixed=fixed, settings=settings, shared=shared, aliases=aliases)

    # what the repository asks ---------------------------------------------------------------------------
    def desired(self, names: set[str] | None = None) -> dict[str, Desired | None]:
        """Per model name, what to serve now; ``None`` for a name that is gone. ``names``: only these."""
        if self.shared is not None:
            self._snapshot = self.shared.read()
        if names is not None:  # a change to a renamed model's file names the file (watch.py): serve its alias
            names = names | {self._disk_names[n] for n in names if n in self._disk_names}
        found: dict[str, Desired] = {}
        for name, model in self._memory.items():
            found[name] = self._single(name, _given(model), None, ("memory", id(model)), model.version or "1")
        for name, (model, path) in self._fixed.items():
            if name not in found:
                found[name] = self._fixed_desired(name, model, path)
        problems: list[str] = []
        held: set[str] = set()  # models of a repository that cannot be read now: left as they are
        for root in self.roots:
            try:
                scanned = scan(root)
            except ModelLoadError as exc:
                held |= self._root_names.get(root, set())
                problem = f"the model repository '{root.name or root}' cannot be read now: {_public(root, exc)}"
                if problem not in self.problems:
                    log.error("%s; its models keep serving as they are", problem)
                problems.append(problem)
                continue
            models = self._renamed(root, scanned.models)
            self._root_names[root] = set(models)
            for problem in scanned.errors:
                if problem not in self.problems:  # once per problem, not once per look
                    log.error("model repository %s: %s", root.name or root, problem)
                problems.append(problem)
            for name, source in models.items():
                if name in found:
                    log.error(
                        "model repository %s: a model named %r is already served; %s/ is ignored", root, name, name
                    )
                    continue
                found[name] = self._repository_desired(root, source)
        self.problems = problems
        self._check_overrides(found)
        for name in (self._snapshot.unloaded | self._unloaded) & set(found):
            found[name] = Desired(name, error="unloaded")
        out: dict[str, Desired | None] = {n: d for n, d in found.items() if names is None or n in names}
        for gone in self._known - set(found) - held:
            if names is None or gone in names:
                out[gone] = None
        self._known = (self._known | set(found) | held) - {n for n, d in out.items() if d is None}
        return out

    def refresh(self, name: str, version: str) -> VersionSpec | None:
        """The spec of ``name``'s ``version`` as its files are now (after they changed while it loaded)."""
        for root in self.roots:
            try:
                source = self._scan_model(root, name)
            except ModelLoadError:
                return None
            if source is not None:
                return self._repository_desired(root, source).versions.get(version)
        return None

    def static_names(self) -> list[str]:
        """The names of models built in Python and of fixed specs (known before anything loads)."""
        return [*self._memory, *(n for n in self._fixed if n not in self._memory)]

    def knows(self, name: str) -> bool:
        """Whether any source has a model named ``name`` now (unloaded or not)."""
        if name in self._memory or name in self._fixed:
            return True
        for root in self.roots:
            try:
                if self._scan_model(root, name) is not None:
                    return True
            except ModelLoadError as exc:
                raise ModelNotReady(
                    f"the model repository '{root.name or root}' cannot be read now: {_public(root, exc)}"
                ) from None
        return False

    def unload(self, name: str) -> Snapshot | None:
        """Stop serving ``name`` (every worker, with shared state: the new shared state) until it is loaded
        again."""
        if self.shared is not None:
            self._snapshot = self.shared.unload(name)
            return self._snapshot
        self._unloaded.add(name)
        return None

    def load(self, name: str) -> Snapshot | None:
        """Serve ``name`` again, and have every worker retry its versions that failed."""
        if self.shared is not None:
            self._snapshot = self.shared.load(name)
            return self._snapshot
        self._unloaded.discard(name)
        return None

    @property
    def snapshot(self) -> Snapshot:
        """The shared state as last read."""
        return self._snapshot

    # renamed single models --------------------------------------------------------------------------------
    def _renamed(self, root: Path, models: Mapping[str, ModelSource]) -> Mapping[str, ModelSource]:
        """``models`` of ``root`` with its one loose model under its alias (when it has one and holds just it)."""
        alias = self._aliases.get(root)
        if alias is None or len(models) != 1:
            return models
        ((disk, source),) = models.items()
        if source.directory is not None:
            return models
        self._disk_names[disk] = alias
        return {alias: replace(source, name=alias)}

    def _scan_model(self, root: Path, name: str) -> ModelSource | None:
        """``scan_model`` that knows a renamed model by its alias (only: its own name is not served)."""
        if root not in self._aliases:
            return scan_model(root, name)
        return self._renamed(root, scan(root).models).get(name)

    # building -------------------------------------------------------------------------------------------
    def _batching(self, name: str, config: ModelConfig | None) -> BatchPolicy | None:
        override = self._overrides.get(name)
        if override is not None:
            return override
        return None if config is None else config.batching

    def _single(
        self,
        name: str,
        load: Callable[[], Model],
        source: str | None,
        fingerprint: Hashable,
        version: str = "1",
        unchanged: Callable[[], bool | None] = lambda: None,
    ) -> Desired:
        spec = VersionSpec(
            version, load, source, fingerprint, self._batching(name, None), self._global_batching, unchanged=unchanged
        )
        return Desired(name, versions={version: spec})

    def _fixed_desired(self, name: str, model: Model, path: Path | None) -> Desired:
        # the model was read at start; a later change to its file is not followed (a repository directory is)
        source = None if path is None else path.name
        return self._single(name, lambda: model, source, ("fixed", id(model)))

    def _repository_desired(self, root: Path, source: ModelSource) -> Desired:
        name = source.name
        desired = Desired(name)
        key = (root, name)
        config = source.config
        stale: str | None = None  # why model.toml is not applied, when the last good one is applied instead
        if config is None:
            why = source.error or "its model.toml cannot be read"
            last = self._good_configs.get(key)
            if last is None:
                desired.error = why
                for version, reason in source.errors.items():
                    desired.failed[str(version)] = (reason, None)
                return desired
            # a typo in model.toml must not take a serving model down: keep the last config that parsed
            config, stale = last, why
        else:
            self._good_configs[key] = config
            self._stale_logged.pop(key, None)
        selected = config.version_policy.select(source.versions)
        # an unusable version the policy would pick (the newest, say) is shown; the usable ones keep serving
        picked = set(config.version_policy.select([*source.versions, *source.errors]))
        for version, why in source.errors.items():
            if version in picked or not selected:
                desired.failed[str(version)] = (why, ("error", why))
        if not source.versions and not source.errors:
            desired.error = "no version directory holds a model"
        queue_s = None if config.max_queue_ms is None else config.max_queue_ms / 1000
        limits = Limits(config.max_inflight, config.inference_timeout_s, config.max_rows, queue_s)
        device = config.device or self.settings.device
        batching = self._batching(name, config)
        for number in selected:
            vs = source.versions[number]
            pin = self._pin(config, vs)
            trust = self._trust if pin is None else Trust(self._trust.trust_pickle, self._trust.sha256 | {pin})
            fingerprint = (vs.fingerprint, batching, device, pin)
            desired.versions[str(number)] = VersionSpec(
                str(number),
                _loader(vs.artefact, name, trust, device, pin, vs.relpath),
                vs.relpath,
                fingerprint,
                batching,
                self._global_batching,
                limits,
                _unchanged(lambda: self._scan_model(root, name), number, vs.fingerprint),
                root,
            )
        desired.labels = {label: str(v) for label, v in config.labels.items()}
        desired.canary_percent = config.canary_percent
        dangling = [f"{label} = {v}" for label, v in config.labels.items() if v not in selected]
        if dangling and desired.error is None:
            shown = ", ".join(str(v) for v in selected) or "none"
            desired.error = f"{name}/model.toml: labels {', '.join(dangling)} name no version served (served: {shown})"
            if self._labels_logged.get(name) != desired.error:
                self._labels_logged[name] = desired.error
                log.error("model %r: %s", name, desired.error)
        if stale is not None:
            shown = ", ".join(str(v) for v in selected) or "none"
            desired.error = f"{stale}; still served with the last valid model.toml (versions {shown})"
            if self._stale_logged.get(key) != desired.error:
                self._stale_logged[key] = desired.error
                log.error("model %r: %s", name, desired.error)
        return desired

    @staticmethod
    def _pin(config: ModelConfig, vs: VersionSource) -> str | None:
        relative = vs.relpath.split("/", 1)[1] if "/" in vs.relpath else vs.relpath
        return config.sha256.get(relative)

    def _check_overrides(self, found: dict[str, Desired]) -> None:
        if self._checked_overrides:
            return
        self._checked_overrides = True
        unknown = sorted(set(self._overrides) - set(found))
        if unknown and not self.roots:
            raise ValueError(f"batching set for unknown model(s) {', '.join(unknown)}; served: {', '.join(found)}")
        if unknown:
            log.warning("batching set for model(s) not in the repository yet: %s", ", ".join(unknown))


def _public(root: Path, exc: Exception) -> str:
    """An error about ``root`` without the server's path to it."""
    return _without_root(root, str(exc), root.name or "the repository")


def _without_root(root: Path, text: str, replacement: str, after: str = "") -> str:
    """``text`` with every spelling of ``root`` (resolved, absolute, as given) followed by ``after`` replaced.
    The longest spelling goes first, and a spelling counts only where a path can start: a relative ``models`` is
    neither the tail of ``/srv/models`` nor the start of ``models2``. (A shorter spelling replaced first left the
    rest of a longer one behind: ``/srv/iris/1/model.onnx`` for ``/srv/models/iris/1/model.onnx``.)"""
    spellings = {str(root.resolve()).rstrip("/"), str(root.absolute()).rstrip("/"), str(root).rstrip("/")}
    alternatives = "|".join(re.escape(s + after) for s in sorted(spellings, key=len, reverse=True) if s)
    if not alternatives:
        return text
    end = "" if after else r"(?![\w.~-])"  # a whole spelling: ``repo`` is not the start of ``repository``
    return re.sub(rf"(?<![\w./~-])(?:{alternatives}){end}", lambda _: replacement, text)


def _given(model: Model) -> Callable[[], Model]:
    return lambda: model


def _loader(
    artefact: Path, name: str, trust: Trust, device: str, pin: str | None = None, relpath: str = ""
) -> Callable[[], Model]:
    def load() -> Model:
        if pin is not None and artefact.is_file():
            # a pin holds for every format: a file whose content is not the pinned one is not served
            with open(artefact, "rb") as fh:
                digest = sha256_of(fh)
            if digest != pin.lower():
                raise ModelLoadError(
                    f"{relpath}: its SHA-256 is {digest}, not the {pin.lower()} that model.toml pins ([sha256])"
                )
        return load_model(artefact, name=name, trust=trust, device=device)

    return load


def _single_loose(path: Path) -> bool:
    """Whether the repository at ``path`` holds exactly one model, a loose one (a model file or MLflow directory),
    and nothing wrong: the directory a storage initializer fills from one model's URI."""
    try:
        found = scan(path)
    except ModelLoadError:
        return False
    return not found.errors and len(found.models) == 1 and next(iter(found.models.values())).directory is None


def _unchanged(
    rescan: Callable[[], ModelSource | None], version: int, fingerprint: Hashable
) -> Callable[[], bool | None]:
    def unchanged() -> bool | None:
        try:
            source = rescan()
        except ModelLoadError:
            return None  # the repository cannot be read now: cannot tell
        now = None if source is None else source.versions.get(version)
        return now is not None and now.fingerprint == fingerprint

    return unchanged


def read_models(settings: Settings) -> tuple[list[Model], list[str]]:
    """Every version the settings would serve, read but not started (``modelapi inspect``), and why each one
    that cannot be read cannot (a fixed spec that fails raises, as the server would)."""
    sources = Sources.from_settings(settings)
    out: list[Model] = []
    wanted = sources.desired()
    problems = list(sources.problems)
    for desired in wanted.values():
        if desired is None:
            continue
        if desired.error:
            problems.append(f"{desired.name}: {desired.error}")
        for version, (reason, _) in desired.failed.items():
            problems.append(f"{desired.name} version {version}: {reason}")
        for spec in desired.versions.values():
            try:
                model = spec.load()
            except ModelLoadError as exc:
                problems.append(f"{desired.name} version {spec.version}: {spec.public(str(exc))}")
                continue
            model.version = spec.version
            out.append(model)
    return out, problems
