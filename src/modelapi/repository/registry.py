"""Repository: the models served, by name and version; the only owner of loaded models.

Each name has a ``ModelEntry``: the versions taking traffic (``READY`` handles), the versions that failed
(``UNAVAILABLE`` with the reason), its labels and canary share. ``reconcile`` brings entries to what the
sources want (``sources.py``: the files on disk, their model.toml and the workers' shared state), one model at a
time, in an order that never drops a request:

1. every wanted version that is new, changed or failed before is loaded on a thread and warmed up on its
   example; if its files changed while it loaded, it is loaded again (at most three times);
2. a version that loaded is swapped in (a dict assignment on the event loop); one that failed never takes
   traffic and what served before keeps serving;
3. versions no longer wanted, and handles replaced by a reload, are taken out of service only once a wanted
   version is ready (so the default moves only to a ready version); each drains the calls it holds, then unloads.

Every state change is reported to ``Events`` as ``ModelStateChanged``. All mutation happens on the event loop,
one reconcile at a time; model loading itself runs on threads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, ModelLoadError, ModelNotFound, ModelNotReady
from ..events import BatchRun, Events, ModelStateChanged
from ..security.principal import Principal
from .handle import State, VersionHandle
from .shared import Snapshot, poll
from .sources import Desired, Sources, VersionSpec
from .watch import watch_repository

log = logging.getLogger("modelapi")
_LOAD_ATTEMPTS = 3
_POLL_S = 0.5  # workers agree on the shared state within this (plus a reconcile)


@dataclass
class ModelEntry:
    name: str
    serving: dict[str, VersionHandle] = field(default_factory=dict)
    #: version -> (reason, fingerprint of the files that failed), shown as UNAVAILABLE
    failed: dict[str, tuple[str, Any]] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    canary_percent: float = 0.0
    #: why the model as a whole cannot be served (a malformed model.toml, no version), else None; with versions
    #: serving, what is wrong without stopping them (a malformed model.toml edit: the last valid one applies)
    error: str | None = None

    @property
    def default_version(self) -> str | None:
        """The ``stable`` label's version when it is ready, else the highest ready version other than the
        canary's (the canary's when it is the only one)."""
        if not self.labels and len(self.serving) == 1:  # the usual case, asked on every call: its only version
            return next(iter(self.serving))
        stable = self.labels.get("stable")
        if stable is not None and stable in self.serving:
            return stable
        if not self.serving:
            return None
        # never the canary's version by default while another serves: its share is the operator's choice
        canary = self.labels.get("canary")
        others = [v for v in self.serving if v != canary]
        return max(others or self.serving, key=_version_order)

    @property
    def ready(self) -> bool:
        return bool(self.serving)

    def ready_versions(self) -> list[str]:
        return sorted(self.serving, key=_version_order)

    def versions(self) -> list[str]:
        """Every version the entry knows of, in version order."""
        return sorted({*self.serving, *self.failed, *self.loading}, key=_version_order)

    def state_of(self, version: str) -> tuple[State, str | None]:
        if version in self.serving:
            failed = self.failed.get(version)
            if failed is not None:  # its files changed and failed to load: the copy in memory keeps serving
                return State.READY, f"the changed files failed to load; the previous ones keep serving: {failed[0]}"
            return State.READY, None
        if version in self.loading:
            return State.LOADING, None
        if version in self.failed:
            return State.UNAVAILABLE, self.failed[version][0]
        raise KeyError(version)


def _stop_when_loaded(loading: asyncio.Future[VersionHandle]) -> None:
    if not loading.cancelled() and loading.exception() is None:
        loading.result().stop()


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


class Repository:
    def __init__(
        self,
        sources: Sources,
        *,
        events: Events | None = None,
        grace_period_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """``rng`` draws the canary share (a seeded one makes a test's share exact)."""
        self.sources = sources
        self.events = events or Events()
        self.grace_period_s = grace_period_s
        self._entries: dict[str, ModelEntry] = {}
        self._lock: asyncio.Lock | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._random = rng or random.Random()  # noqa: S311 (traffic shares, not secrets)
        self.started = False
        #: bumps whenever what is served changes (a version swapped in or out, labels, limits, a name gone):
        #: caches key on it (``DataPlane.shed``'s kept refusal)
        self.generation = 0
        for name in sources.static_names():  # known before they load: "not ready" rather than "no such model"
            self._entries[name] = ModelEntry(name)
        #: the shared state (loads and unloads asked of any worker) this worker has applied
        self._applied = sources.snapshot

    # reading (any front end) ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every model name the repository knows, ready or not, in the sources' order."""
        return list(self._entries)

    def ready_names(self) -> list[str]:
        return [n for n, e in self._entries.items() if e.ready]

    def ready_entries(self) -> list[ModelEntry]:
        """The entries of the models that serve a version, in the sources' order."""
        return [e for e in self._entries.values() if e.serving]

    def entry(self, name: str, principal: Principal | None = None) -> ModelEntry:
        """The model's entry; ``ModelNotFound`` for a name unknown, or one the key may not use (the same 404)."""
        entry = self._entries.get(name)
        # principal.can_use, inline: on every request with a key
        if entry is None or (principal is not None and principal.models is not None and name not in principal.models):
            shown = [n for n in self._entries if principal is None or principal.can_use(n)]
            raise ModelNotFound(f"no model named '{name}'; served models: {', '.join(shown) or 'none'}")
        return entry

    @property
    def ready(self) -> bool:
        """Started, and at least one model serves a version."""
        return self.started and any(e.ready for e in self._entries.values())

    @property
    def only_model(self) -> str | None:
        """The model un-prefixed routes (``/predict``) address: the only one known, if only one."""
        return next(iter(self._entries)) if len(self._entries) == 1 else None

    def resolve(
        self, name: str, version: str | None = None, label: str | None = None, principal: Principal | None = None
    ) -> VersionHandle:
        """The handle a call goes to: ``version``, else ``label``'s version, else the default (or, for that share
        of calls, the canary). 404 for what does not exist, 503 for what exists but is not ready."""
        entry = self.entry(name, principal)
        if label is not None:
            labelled = entry.labels.get(label)
            if labelled is None:
                labels = ", ".join(f"{k} (version {v})" for k, v in entry.labels.items()) or "none"
                raise ModelNotFound(f"model '{name}' has no label '{label}'; its labels: {labels}")
            version = labelled
        if version is not None:
            handle = entry.serving.get(version)
            if handle is not None:
                return handle
            if version in entry.loading:
                raise ModelNotReady(f"model '{name}' version {version} is loading")
            if version in entry.failed:
                raise ModelNotReady(f"model '{name}' version {version} is unavailable: {entry.failed[version][0]}")
            shown = ", ".join(entry.versions()) or "none"
            raise ModelNotFound(f"model '{name}' has no version '{version}'; its versions: {shown}")
        if entry.canary_percent > 0:
            canary = entry.serving.get(entry.labels.get("canary", ""))
            if canary is not None and self._random.random() * 100 < entry.canary_percent:
                return canary
        default = entry.default_version
        if default is None:
            why = f": {entry.error}" if entry.error else ""
            raise ModelNotReady(f"model '{name}' is not ready: no version is loaded{why}")
        return entry.serving[default]

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: one row per model version with its state (and reason when unavailable)."""
        rows: list[dict[str, Any]] = []
        for name, entry in self._entries.items():
            versions = entry.versions()
            if not versions:
                rows.append({"name": name, "version": "", "state": State.UNAVAILABLE, "reason": entry.error or ""})
            for version in versions:
                state, reason = entry.state_of(version)
                # a model-wide problem that does not stop it serving (a malformed model.toml) shows on its rows
                reason = reason or entry.error
                rows.append({"name": name, "version": version, "state": state, "reason": reason or ""})
        return rows

    # changing (event loop) --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what the sources want. Raises ``ModelLoadError`` when no model could be served at all."""
        await self.reconcile()
        self._applied = self.sources.snapshot
        self.started = True
        if not any(e.ready for e in self._entries.values()):
            reasons = [
                *self.sources.problems,
                *(f"{n}: {e.error or self._reasons(e)}" for n, e in self._entries.items()),
            ]
            raise ModelLoadError("no model could be loaded; " + ("; ".join(reasons) or "the repository is empty"))
        for name, entry in self._entries.items():
            if entry.error or entry.failed:
                log.error("model %r: %s", name, entry.error or self._reasons(entry))

    @staticmethod
    def _reasons(entry: ModelEntry) -> str:
        return "; ".join(f"version {v}: {r}" for v, (r, _) in entry.failed.items()) or "no version to serve"

    async def reconcile(self, names: Iterable[str] | None = None, *, force: bool = False) -> None:
        """Bring ``names`` (default: every model the sources know) to what the sources want now. ``force``:
        retry versions that failed even if their files did not change (an explicit load)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            wanted = await asyncio.to_thread(self.sources.desired, None if names is None else set(names))
            for name, desired in wanted.items():
                await self._apply(name, desired, force)

    async def _apply(self, name: str, desired: Desired | None, force: bool) -> None:
        entry = self._entries.get(name)
        if desired is None:  # gone from the sources, or unloaded: everything leaves
            if entry is not None:
                del self._entries[name]
                self.generation += 1  # (a name gone can change ``only_model``, which a refusal names)
                for handle in entry.serving.values():
                    self._retire(handle)
            return
        if entry is None:
            entry = self._entries[name] = ModelEntry(name)
        entry.error = desired.error
        for version, (reason, fingerprint) in desired.failed.items():
            entry.failed[version] = (reason, fingerprint)
        replaced: list[VersionHandle] = []
        try:
            for version, spec in desired.versions.items():
                current = entry.serving.get(version)
                if current is not None and current.fingerprint == spec.fingerprint:
                    limits = spec.limits
                    current.max_inflight, current.inference_timeout_s = limits.max_inflight, limits.inference_timeout_s
                    current.max_rows, current.max_queue_s = limits.max_rows, limits.max_queue_s
                    entry.failed.pop(version, None)  # the files are back to what serves
                    continue
                failed = entry.failed.get(version)
                if failed is not None and failed[1] == spec.fingerprint and not force:
                    continue  # the same broken files (served or not): wait for them to change, or for an explicit load
                loaded = await self._load(entry, spec)
                if loaded is not None:
                    entry.serving[version] = loaded
                    entry.failed.pop(version, None)
                    if current is not None:
                        replaced.append(current)
            for version in [v for v in entry.failed if v not in desired.versions and v not in desired.failed]:
                del entry.failed[version]
            entry.labels = {k: v for k, v in desired.labels.items()}
            entry.canary_percent = desired.canary_percent
        finally:  # also when cancelled: a replaced version never stays loaded
            for handle in replaced:
                self._retire(handle)
        self.generation += 1
        if not desired.versions or any(v in entry.serving for v in desired.versions):
            # nothing is wanted (unloaded, or every version removed), or a wanted version is ready: the rest go
            for version in [v for v in entry.serving if v not in desired.versions]:
                self._retire(entry.serving.pop(version))

    async def _load(self, entry: ModelEntry, spec: VersionSpec) -> VersionHandle | None:
        entry.loading.add(spec.version)
        self._changed(entry.name, spec.version, State.LOADING, None)
        try:
            for _attempt in range(_LOAD_ATTEMPTS):
                loading = asyncio.ensure_future(asyncio.to_thread(self._start, spec))
                try:
                    handle = await asyncio.shield(loading)
                except asyncio.CancelledError:
                    loading.add_done_callback(_stop_when_loaded)  # the thread goes on; unload what it loads
                    raise
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
                    reason = spec.public(reason)
                    log.error("model %r version %s failed to load: %s", entry.name, spec.version, reason)
                    entry.failed[spec.version] = (reason, spec.fingerprint)
                    self._changed(entry.name, spec.version, State.UNAVAILABLE, State.LOADING, reason)
                    return None
                if await asyncio.to_thread(spec.unchanged) is not False:
                    handle.state = State.READY
                    self._changed(entry.name, spec.version, State.READY, State.LOADING)
                    return handle
                log.warning("model %r version %s changed while it loaded; loading it again", entry.name, spec.version)
                await asyncio.to_thread(handle.stop)
                refreshed = await asyncio.to_thread(self.sources.refresh, entry.name, spec.version)
                if refreshed is None:
                    break
                spec = refreshed
            reason = "its files kept changing while it loaded: write them elsewhere, then rename them into place"
            entry.failed[spec.version] = (reason, spec.fingerprint)
            self._changed(entry.name, spec.version, State.UNAVAILABLE, State.LOADING, reason)
            return None
        finally:
            entry.loading.discard(spec.version)

    def _start(self, spec: VersionSpec) -> VersionHandle:
        model = spec.load()
        handle = VersionHandle(
            model,
            spec.version,
            policy=spec.policy_for(model),
            source=spec.source,
            fingerprint=spec.fingerprint,
            on_batch=self._batch_run,
        )
        handle.max_inflight, handle.inference_timeout_s, handle.max_rows, handle.max_queue_s = spec.limits
        handle.start()
        return handle

    def _batch_run(self, handle: VersionHandle, rows: int, requests: int, seconds: float) -> None:
        if self.events.active:
            self.events.batch_run(BatchRun(handle.name, handle.version, rows, requests, seconds))

    def _retire(self, handle: VersionHandle, grace_s: float | None = None) -> None:
        """Out of service already; drain its calls (at most ``grace_s``, default the grace period), then unload
        it, in the background."""
        grace = self.grace_period_s if grace_s is None else grace_s
        handle.state = State.UNLOADING
        self._changed(handle.name, handle.version, State.UNLOADING, State.READY)

        async def retire() -> None:
            if not await handle.drain(grace):
                log.warning(
                    "model %r version %s: calls still running after %g s; unloading anyway",
                    handle.name,
                    handle.version,
                    grace,
                )
            await asyncio.to_thread(handle.stop)
            handle.state = State.UNLOADED
            self._changed(handle.name, handle.version, State.UNLOADED, State.UNLOADING)

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _changed(
        self, name: str, version: str, state: State, previous: State | None, reason: str | None = None
    ) -> None:
        self.generation += 1
        self.events.model_state_changed(ModelStateChanged(name, version, state, previous, reason))

    # on demand (the V2 repository extension) -------------------------------------------------------------
    async def load_model(self, name: str) -> None:
        """Load ``name`` from its source, or load it again: new files are picked up and versions that failed
        are retried. Every worker follows (shared state). 400 with the reasons when no version is ready."""
        if not await asyncio.to_thread(self.sources.knows, name):
            raise ModelNotFound(f"no model named '{name}' in the model repository")
        snapshot = await asyncio.to_thread(self.sources.load, name)
        if snapshot is None:  # one worker: nothing to share
            await self.reconcile({name}, force=True)
        else:  # its reload counter moved: a forced reconcile, with whatever else other workers asked meanwhile
            await self._sync_shared(snapshot)
        entry = self._entries.get(name)
        if entry is None or not entry.ready:
            why = "not found" if entry is None else entry.error or self._reasons(entry)
            raise BadRequest(f"failed to load '{name}': {why}")

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name`` on every worker; calls in flight finish first."""
        self.entry(name)
        snapshot = await asyncio.to_thread(self.sources.unload, name)
        if snapshot is None:
            await self.reconcile({name})
        else:
            await self._sync_shared(snapshot)

    # following changes --------------------------------------------------------------------------------------
    async def follow(self, *, watch: bool = False) -> None:
        """Until cancelled: follow the workers' shared state and, with ``watch``, the repository directories."""
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        shared = self.sources.shared
        if shared is not None:
            since = self._applied.generation
            tasks.append(loop.create_task(poll(shared, self._sync_shared, interval_s=_POLL_S, since=since)))
        if watch:
            for root in self.sources.roots:
                tasks.append(loop.create_task(watch_repository(root, self._files_changed)))
        if not tasks:
            return
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _files_changed(self, names: set[str]) -> None:
        log.info("model repository changed: %s", ", ".join(sorted(names)))
        # shielded: a shutdown that cancels the follower lets a load in progress finish, and close() waits
        # for it, so nothing loaded is left behind without being unloaded
        await asyncio.shield(self.reconcile(names))

    async def _sync_shared(self, snapshot: Snapshot) -> None:
        """Apply what changed in the shared state since this worker last applied it, whichever path read it
        (the poll, or this worker's own load or unload): models unloaded or loaded again, reloads asked."""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:  # a second caller with the same snapshot waits until it is applied
            applied = self._applied
            if snapshot.generation <= applied.generation:  # generations only grow: older news is no news
                return
            self._applied = snapshot
            changed = set(applied.unloaded ^ snapshot.unloaded)
            reloads = {n for n, count in snapshot.reloads.items() if applied.reloads.get(n) != count}
            if reloads:
                await asyncio.shield(self.reconcile(reloads, force=True))
            if changed - reloads:
                await asyncio.shield(self.reconcile(changed - reloads))

    async def settled(self) -> None:
        """Wait for retired versions to finish unloading (tests, shutdown)."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    async def close(self) -> None:
        """Unload everything: shutdown, after the server has drained its requests. A reconcile in progress
        (a version loading on its thread) finishes first, so what it loads is unloaded too."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._close_entries()
        await self.settled()
        self.started = False

    def _close_entries(self) -> None:
        for name in list(self._entries):
            entry = self._entries.pop(name)
            for handle in entry.serving.values():
                self._retire(handle, grace_s=0)  # the server's grace period is over: nothing waits any longer
