"""Single-process or multiprocess metrics, chosen once per server by ``setup``, and the text a scrape gets.

prometheus-client decides where a metric keeps its value when the metric is created: in memory, or (with
``PROMETHEUS_MULTIPROC_DIR`` set) in a file per process that any process can read. ``setup(directory)``
makes that choice explicitly and early: the supervisor calls it before it forks the workers (each worker
then writes ``<kind>_<pid>.db`` files into ``directory``), a single-process server calls ``setup(None)``.
The metric objects themselves (``families()``) are created on first use after that, never at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .catalog import Families

log = logging.getLogger("modelapi.metrics")
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the classic text format every Prometheus reads (our names need none of 1.0.0's UTF-8 escaping)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Flusher(Protocol):
    def flush(self) -> None: ...


class _State:
    directory: Path | None = None
    registry: CollectorRegistry | None = None
    families: Families | None = None
    #: names of families this process counts but does not expose (``setup``'s ``hide``)
    hidden: frozenset[str] = frozenset()
    configured = False
    #: this process's observers, whose tallies reach the values when flushed (weakly held)
    flushers: weakref.WeakSet[Flusher] = weakref.WeakSet()


_state = _State()


def register_flusher(observer: Flusher) -> None:
    """``observer.flush()`` runs before every ``render`` and from ``sampling.refresh`` (held weakly)."""
    _state.flushers.add(observer)


def flush() -> None:
    """Push every observer's tallies into the values now."""
    for observer in list(_state.flushers):
        try:
            observer.flush()
        except Exception:
            log.exception("metrics: flushing %s failed", type(observer).__name__)


def setup(directory: Path | None, *, hide: Iterable[str] = ()) -> None:
    """Choose how this server keeps metrics; call before any worker forks and before ``families()``.

    ``directory``: a fresh directory for this server's multiprocess files (created; any ``*.db`` left in it
    by an earlier run is deleted); ``None``: this process's own registry (``PROMETHEUS_MULTIPROC_DIR`` is
    removed from the environment so nothing started from here believes otherwise). A second call starts
    over: metric objects made before it (and observers holding them) no longer count. ``hide``: names of
    families left out of ``render`` and ``collect`` (their objects still take values); with ``None`` only (a
    ``modelapi worker`` hides the jobs gauges, which the servers sample from the jobs database).
    """
    hidden = frozenset(hide)
    if hidden and directory is not None:
        raise ValueError("metrics.setup: hide is for a single process (directory None)")
    # no *_created series: multiprocess mode has none, so neither mode shows them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if directory is None:
        os.environ.pop(ENV, None)
        values.ValueClass = values.MutexValue
        _state.registry = CollectorRegistry(auto_describe=True)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        os.environ[ENV] = str(directory)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _state.registry = None
    _state.directory = directory
    _state.families = None
    _state.hidden = hidden
    _state.flushers = weakref.WeakSet()
    _state.configured = True


def multiprocess() -> bool:
    return _state.directory is not None


def directory() -> Path | None:
    return _state.directory


def families() -> Families:
    """The metric objects, created on first use (``setup(None)`` first if nobody called ``setup``)."""
    if not _state.configured:
        setup(Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if _state.families is None:
        made = Families(_state.registry)
        if _state.registry is not None:
            unknown = sorted(_state.hidden - made.by_name.keys())
            if unknown:
                # nothing made stays registered: a later call raises the same, not prometheus' "Duplicated"
                _state.registry = CollectorRegistry(auto_describe=True)
                raise ValueError(f"metrics.setup: hide names {unknown[0]!r}, which is no modelapi metric")
            for name in sorted(_state.hidden):
                _state.registry.unregister(made.by_name[name])
        _state.families = made
    return _state.families


def _registry() -> CollectorRegistry:
    if _state.directory is not None:  # what the files hold; reading writes nothing
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(_state.directory))  # type: ignore[no-untyped-call]
        return registry
    families()  # every family is described, even before its first sample
    assert _state.registry is not None
    return _state.registry


def render() -> tuple[bytes, str]:
    """The exposition text and its content type: every live and dead worker's files aggregated in multiprocess
    mode, else this process's registry. This process's observers are flushed first; samplers are not run
    here (see ``sampling.refresh``)."""
    flush()
    return generate_latest(_registry()), CONTENT_TYPE


def collect() -> Iterable[Metric]:
    """The same aggregated families ``render`` writes, as objects (Triton's statistics read them)."""
    flush()
    return _registry().collect()


def worker_died(pid: int) -> None:
    """The supervisor reaped worker ``pid``: its live gauges go, its counters and histograms stay. Call it
    before starting the replacement (which may get the same pid)."""
    if _state.directory is None:
        return
    try:
        mark_process_dead(pid, str(_state.directory))  # type: ignore[no-untyped-call]
    except OSError:
        log.exception("metrics: cannot remove the gauges of worker %d", pid)


def shutdown() -> None:
    """Delete this server's multiprocess files (the supervisor, once every worker has exited)."""
    if _state.directory is None:
        return
    for path in _state.directory.glob("*.db"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        _state.directory.rmdir()  # left in place when something else lives there
