"""Hot reload: notice changes in the model repository and say which models they touch.

``watchfiles`` (Rust ``notify`` underneath) is used rather than a scan on a timer: it hears inotify, FSEvents or
ReadDirectoryChangesW events, so a change is seen at once at no cost while nothing changes, and it debounces in
Rust: events within ``debounce_ms`` of one another come as one batch, so copying a model of many files triggers one
reload, not one per file. ``force_polling=True`` (or ``WATCHFILES_FORCE_POLLING=1`` in the environment) makes it
poll instead, for file systems that send no events (NFS, some container mounts).

Publishing a model follows the write-then-rename convention (``layout.py``): write ``DIR/iris/3.tmp/`` (or
``DIR/churn.skops.part``) in full, then rename it into place. Names starting with ``.`` or ending with ``.tmp``,
``.part``, ``.partial`` or ``~`` are ignored at every level, so the writes into ``iris/3.tmp/`` report nothing
and the rename reports ``iris``, through the path it creates (``iris/3``): a model is reloaded once, when it is
complete. What to reload is the registry's business: this module only names the models.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchfiles import Change, awatch

from ..models.registry import SIDECAR_SUFFIXES

log = logging.getLogger("modelapi")

# the same rule as layout.py's scan, so a change the scan would not see is not reported either
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", "~")


def _ignored(part: str) -> bool:
    return part.startswith(".") or part.endswith(_IGNORED_SUFFIXES)


def _relative(root: Path, path: Path) -> tuple[str, ...] | None:
    try:
        return path.relative_to(root).parts
    except ValueError:
        pass
    try:  # one of them reached through a symlink (watchfiles reports the paths it resolved)
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(root)).parts
    except ValueError:
        return None


def _loose_name(path: Path) -> str:
    """The model a top-level file names: ``churn.skops`` and its sidecar ``churn.examples.json`` name ``churn``."""
    lowered = path.name.lower()
    for suffix in SIDECAR_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def changed_models(root: Path, paths: Iterable[str | Path]) -> set[str]:
    """The model names that changes at ``paths`` touch; paths outside ``root``, and ignored ones, name none.

    ``root/<name>/...`` (a version, ``model.toml``, or the model directory itself) names ``<name>``; a top-level
    file names its stem (``churn.skops`` -> ``churn``). A top-level path that no longer exists may have been a file
    or a directory, so it names both candidates (``churn.skops`` -> ``churn`` and ``churn.skops``); the registry
    reconciles a name that is no model as a no-op."""
    root = Path(root)
    names: set[str] = set()
    for raw in paths:
        path = Path(raw)
        parts = _relative(root, path)
        if not parts or any(_ignored(part) for part in parts):
            continue
        if len(parts) > 1 or path.is_dir():
            names.add(parts[0])
        elif path.exists():
            names.add(_loose_name(path))
        else:
            names.update({parts[0], _loose_name(path)})
    return names


async def watch_repository(
    root: Path,
    on_change: Callable[[set[str]], Awaitable[None]],
    *,
    debounce_ms: int = 500,
    stop_event: asyncio.Event | None = None,
    force_polling: bool = False,
) -> None:
    """Watch ``root`` recursively and call ``on_change`` with the models each batch of changes touches.

    Runs until ``stop_event`` is set or the task is cancelled. A batch that touches no model (only temp files) is
    not reported; an exception from ``on_change`` is logged and watching goes on."""
    root = Path(root)
    async for changes in awatch(
        root,
        watch_filter=None,  # changed_models applies the scan's own rule, no other
        recursive=True,
        debounce=debounce_ms,
        stop_event=stop_event,
        force_polling=force_polling or None,  # None: watchfiles decides (WATCHFILES_FORCE_POLLING, WSL)
    ):
        # a directory's own "modified" (the poller's mtime check, a chmod) says nothing the events of its entries
        # do not: creating iris/3.tmp/ modifies iris/, and must not report iris before the rename
        paths = (path for change, path in changes if not (change == Change.modified and os.path.isdir(path)))
        names = changed_models(root, paths)
        if not names:
            continue
        log.debug("model repository changed: %s", ", ".join(sorted(names)))
        try:
            await on_change(names)
        except Exception:
            log.exception("reacting to changes of %s failed", ", ".join(sorted(names)))
