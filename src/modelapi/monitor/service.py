"""One worker's prediction log and drift (docs/monitoring.md).

``Monitor.from_settings(settings)`` holds one worker's view: the per-model policies, the store, and, once
``start(events)`` found a model that logs, the ``PredictionLogger`` subscribed to the events and the drift
gauges. ``status(model)`` is what ``GET /models/{name}/monitor`` and ``modelapi monitor`` show; it reads the
whole log, so any worker answers for all of them. Inputs marked sensitive are never logged: the status names them
in ``sensitive``, beside the features, and has no drift for them. One unmarked under a reference built from the
log, or before it was built, gets its summary from the rows logged since (``reference.collecting`` says how many
until then).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..events import Events
from ..settings import Settings
from . import drift
from .logger import PredictionLogger
from .policy import Policies
from .records import INPUT
from .reference import build, file_fingerprint, read_file, summarize
from .store import LogStore, open_store

log = logging.getLogger("modelapi.monitor")
HOUR_S, DAY_S = 3600.0, 86400.0


class Monitor:
    def __init__(
        self, settings: Settings, store: LogStore, policies: Policies | None = None, *, read_only: bool = False
    ) -> None:
        self.settings = settings
        self.store = store
        #: a reader of the log (``modelapi monitor``) that builds references in memory and never saves one: the
        #: stored reference is the server's, and a report given another file must not replace it
        self.read_only = read_only
        self.policies = policies or Policies(settings)
        self.logger: PredictionLogger | None = None
        #: per model, one reader and writer of its stored reference at a time in this process (``reference``);
        #: ``_lock`` guards the dict alone
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._gauges: Any = None
        #: per model, the inputs unmarked sensitive whose summary waits for rows logged since (``reference``)
        self._collecting: dict[str, dict[str, str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, read_only: bool = False) -> Monitor:
        return cls(settings, open_store(settings), read_only=read_only)

    # serving ------------------------------------------------------------------------------------------------
    def start(self, events: Events, families: Any = None) -> bool:
        """Subscribe the logger and start its writer (and the drift gauges, with ``families``) when any model
        logs; with none, nothing subscribes and requests build nothing for the log. Whether it started."""
        if not self.policies.any_enabled():
            return False
        self.logger = PredictionLogger(self.settings, self.policies, self.store, families, self._left_out)
        events.subscribe(self.logger)
        self.logger.start()
        if families is not None:
            from .gauges import DriftGauges

            self._gauges = DriftGauges(self, families, self.settings.monitor_interval_s)
            self._gauges.start()
        return True

    def stop(self) -> None:
        if self._gauges is not None:
            self._gauges.stop()
        if self.logger is not None:
            self.logger.stop(self.settings.grace_period_s)
        self.store.close()

    def logging_models(self) -> list[str]:
        logger = self.logger
        return [] if logger is None else [m for m, r in logger._rates.items() if r > 0]

    # the reference ------------------------------------------------------------------------------------------
    def sensitive(self, model: str, stored: dict[str, Any] | None) -> frozenset[str]:
        """The model's inputs marked sensitive: its model.toml's where this process reads it (the server, or
        ``modelapi monitor`` given the repository); else those the server noted in the stored reference."""
        if self.policies.roots:
            return self.policies.get(model).sensitive
        return frozenset(stored.get("sensitive") or ()) if stored is not None else frozenset()

    def reference(self, model: str) -> tuple[dict[str, Any] | None, str]:
        """The model's reference summary (built and saved when missing or stale), and what it is or why none. It
        summarises no input marked sensitive, and names those inputs (``"sensitive"``) for a reader that has no
        model.toml to ask (``modelapi monitor``)."""
        # one reader and writer of the stored reference at a time in this process: the log's writer thread notes
        # changes of the inputs marked sensitive in it too (``_left_out``), and a stale read saved over a
        # reference just built would drop it. One lock per model: building one model's reference (reading its
        # first rows, its log since a change) holds up neither another model's status nor the writer noting
        # another model's change
        with self._model_lock(model):
            return self._reference(model)

    def _model_lock(self, model: str) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(model)
            if lock is None:
                lock = self._locks[model] = threading.Lock()
            return lock

    def _reference(self, model: str) -> tuple[dict[str, Any] | None, str]:
        policy = self.policies.get(model)
        stored = self.store.load_reference(model)
        sensitive = self.sensitive(model, stored)
        noted = sorted(sensitive)
        if policy.reference is not None:
            shown = policy.reference.name  # never a server path
            try:
                fingerprint = file_fingerprint(policy.reference)
            except OSError:
                built = stored is not None and "features" in stored  # not the note kept while collecting (below)
                return (stored if built else None), f"reference file {shown} cannot be read"
            # rebuilt too when the inputs marked sensitive changed: one no longer marked gets its summary back
            if stored is None or stored.get("fingerprint") != fingerprint or stored.get("sensitive", []) != noted:
                try:
                    table = _without(read_file(policy.reference), sensitive)
                    stored = build(table, f"file {shown}", fingerprint=fingerprint)
                except Exception as exc:
                    log.warning(
                        "monitor: reference file %s of model %r cannot be read: %s", policy.reference, model, exc
                    )
                    return None, f"reference file {shown} cannot be read"
                self._save_reference(model, stored)
        elif stored is None or "features" not in stored:
            # the first rows are still being collected: what is stored is at most a note of the inputs marked
            # sensitive (and of those unmarked since, with when), kept so that a change seen now still counts
            # once the reference is built, by this worker or another, after a restart or not
            note: dict[str, Any] = {} if stored is None else stored
            if _follow_sensitive(note, sensitive, log_built=True):
                self._save_reference(model, note)
            first = self.store.first(model, policy.reference_rows)
            if first.num_rows < policy.reference_rows:
                return None, f"collecting: {first.num_rows} of the first {policy.reference_rows} rows logged"
            # an input unmarked while they were logged: some of these rows never held it, so its summary comes
            # from the rows logged since, as for one unmarked once the reference exists (``pending``)
            pending: dict[str, float] = note.get("pending", {})
            stored = build(_without(first, sensitive.union(pending)), f"the first {first.num_rows} logged rows")
            stored["sensitive"] = noted
            if pending:
                stored["pending"] = pending
            self._save_reference(model, stored)
        if _follow_sensitive(stored, sensitive, log_built=policy.reference is None):
            self._save_reference(model, stored)
        self._collecting[model] = (
            self._collect_pending(model, stored, policy.reference_rows)
            if stored.get("pending") and policy.reference is None
            else {}
        )
        if stored.get("prediction") is None:  # a file holds no predictions: the first logged rows give them
            prediction = self._prediction_reference(model, policy.reference_rows)
            if prediction is not None:
                stored["prediction"] = prediction
                self._save_reference(model, stored)
        return stored, stored["source"]

    def _left_out(self, model: str) -> None:
        """The writer is about to log ``model``'s rows leaving out another set of inputs than before: under a
        reference built from the log, or while its first rows are collected, noted now as ``reference`` would
        note it, so that the rows logged while an input was marked never make its summary, even when no status
        was computed between its marking and its unmarking."""
        if self.policies.get(model).reference is not None:  # a file's reference is rebuilt on a change instead
            return
        with self._model_lock(model):
            stored = self.store.load_reference(model)
            note: dict[str, Any] = {} if stored is None else stored
            if _follow_sensitive(note, self.sensitive(model, stored), log_built=True):
                self._save_reference(model, note)

    def _save_reference(self, model: str, stored: dict[str, Any]) -> None:
        if not self.read_only:
            self.store.save_reference(model, stored)

    def _collect_pending(self, model: str, stored: dict[str, Any], needed: int) -> dict[str, str]:
        """Summarise each input of ``stored["pending"]`` (unmarked sensitive under a log-built reference) from the
        first ``needed`` rows logged since it was unmarked, once there are as many (an input those rows do not
        hold is not one the log keeps: it is let go). Returns what the others wait for."""
        pending: dict[str, float] = stored["pending"]
        before = len(pending)
        later = self.store.read(model, min(pending.values()))
        collecting: dict[str, str] = {}
        for name, since in sorted(pending.items()):
            rows = _after(later, since).slice(0, needed)
            column = INPUT + name
            if rows.num_rows >= needed:
                if column in rows.column_names:
                    stored["features"][name] = summarize(rows[column])
                del pending[name]
            else:
                when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
                collecting[name] = (
                    f"collecting: {rows.num_rows} of the first {needed} rows logged since {when}, "
                    "when it was no longer marked sensitive"
                )
        if len(pending) < before:
            if not pending:
                del stored["pending"]
            self._save_reference(model, stored)
        return collecting

    def _prediction_reference(self, model: str, rows: int) -> dict[str, Any] | None:
        first = self.store.first(model, rows)
        return build(first, "")["prediction"] if first.num_rows >= rows else None

    # drift --------------------------------------------------------------------------------------------------
    def status(self, model: str, *, since: float | None = None, now: float | None = None) -> dict[str, Any]:
        """Drift per version and window: the last ``drift_window_rows`` rows, the last hour, the last day
        (and ``since``, when given: the window a report covers)."""
        now = time.time() if now is None else now
        start = min(now - DAY_S, since) if since is not None else now - DAY_S
        rows = self.store.read(model, start)
        tallies = self.store.tallies(model, start)
        reference, about = self.reference(model)
        policy = self.policies.get(model)
        # while the first rows are collected, the inputs marked sensitive are in the note stored in the
        # reference's place: a reader with no model.toml (``modelapi monitor``) names them from it
        sensitive = self.sensitive(model, reference if reference is not None else self.store.load_reference(model))
        logger = self.logger
        out: dict[str, Any] = {
            "model": model,
            "logging": {
                "rate": policy.rate,
                "written": 0 if logger is None else logger.written[model],
                "dropped": 0 if logger is None else logger.dropped[model],
            },
            "reference": {"source": about, "rows": None if reference is None else reference["rows"]},
            "thresholds": {"psi_moderate": drift.PSI_MODERATE, "psi_major": drift.PSI_MAJOR, "p_value": drift.P_VALUE},
            # never logged, so no drift: named here, not listed among the features as if their rows were missing
            "sensitive": sorted(sensitive),
            "versions": {},
        }
        collecting = self._collecting.get(model) if reference is not None else None
        if collecting:  # unmarked sensitive under a log-built reference: no summary yet, so not among the features
            out["reference"]["collecting"] = collecting
        versions = sorted(set(_strings(rows["version"])) | set(_strings(tallies["version"])), key=_version_key)
        for version in versions:
            mine = rows.filter(pc.equal(rows["version"], version)) if rows.num_rows else rows
            counts = tallies.filter(pc.equal(tallies["version"], version)) if tallies.num_rows else tallies
            windows = {
                "last_rows": (mine.slice(max(0, mine.num_rows - self.settings.drift_window_rows)), None),
                "last_hour": (_after(mine, now - HOUR_S), _minutes_after(counts, now - HOUR_S)),
                "last_day": (_after(mine, now - DAY_S), _minutes_after(counts, now - DAY_S)),
            }
            if since is not None:
                windows["since"] = (_after(mine, since), _minutes_after(counts, since))
            out["versions"][version] = {
                name: drift.window(reference, window_rows, window_counts, sensitive)
                for name, (window_rows, window_counts) in windows.items()
            }
        return out


def _follow_sensitive(stored: dict[str, Any], sensitive: frozenset[str], *, log_built: bool) -> bool:
    """Bring ``stored`` (a reference, or the note kept until one is built from the log) up to the inputs marked
    ``sensitive`` now; whether it changed. One marked since loses its summary and its name is noted. One no
    longer marked, under a reference built (or to be built) from the log, waits in ``pending`` from now: the rows
    logged before never held it, and that reference is kept (the other inputs' baseline must not move), so its
    own summary comes from the first rows logged from now on (a file reference is rebuilt instead)."""
    noted = sorted(sensitive)
    features: dict[str, Any] = stored.get("features", {})
    if stored.get("sensitive", []) == noted and not any(name in features for name in sensitive):
        return False
    unmarked = set(stored.get("sensitive", [])) - sensitive
    if "features" in stored:
        stored["features"] = features = {k: v for k, v in features.items() if k not in sensitive}
    stored["sensitive"] = noted
    pending = {k: v for k, v in stored.get("pending", {}).items() if k not in sensitive}
    if log_built:
        now = time.time()
        pending.update({name: now for name in sorted(unmarked) if name not in features})
    if pending:
        stored["pending"] = pending
    else:
        stored.pop("pending", None)
    return True


def _without(table: pa.Table, sensitive: frozenset[str]) -> pa.Table:
    """``table`` without the columns of inputs marked sensitive (a training file holds them)."""
    drop = [name for name in table.column_names if name.startswith(INPUT) and name[len(INPUT) :] in sensitive]
    return table.drop_columns(drop) if drop else table


def _strings(column: pa.ChunkedArray) -> list[str]:
    return [v for v in column.to_pylist() if v is not None]


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _after(rows: pa.Table, since: float) -> pa.Table:
    if not rows.num_rows:
        return rows
    cutoff = pa.scalar(int(since * 1_000_000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return rows.filter(pc.greater_equal(rows["time"], cutoff))


def _minutes_after(tallies: pa.Table, since: float) -> pa.Table:
    if not tallies.num_rows:
        return tallies
    return tallies.filter(pc.greater_equal(tallies["minute"], int(since // 60)))


__all__ = ["Monitor"]
