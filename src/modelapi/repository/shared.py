"""The desired state that every worker of one server agrees on: which models an operator unloaded or re-loaded.

With ``--workers N`` the workers are separate processes, each holding its own copy of the loaded models, and an
operator's ``load``/``unload`` over the management API reaches whichever worker answered. So the operator's wish
cannot live in one worker's memory: it lives in a small JSON file in the server's state directory, the single
source of truth, which every worker polls (``poll``, every 0.5 s by default, so all agree well within 2 s)::

    {"generation": 7, "unloaded": ["churn"], "reloads": {"iris": 2}}

``generation`` bumps on every change, so a poller needs one comparison to know whether anything happened;
``unloaded`` names the models not to serve until loaded again; ``reloads`` counts explicit loads per model, and a
counter that differs from the one a worker last saw asks it to load that model again, even from unchanged files.

Writers serialise on an exclusive ``flock`` of a sibling lock file (``<path>.lock``): read, modify, write a temp
file in the same directory, ``fsync``, ``os.replace`` into place. Two workers changing the state at once therefore
never lose one another's update, and because the rename is atomic a reader sees the old file or the new one, never
half of one, so readers take no lock. The lock is on a separate file because the state file itself is replaced on
every write (a lock on it would be on an inode that is gone). Files are created ``0o600``: the state is the
server's own. The file is plain data, so it is read with ``orjson`` directly rather than ``jsonutil.loads``,
which is for request bodies.

A fresh server starts from the model files alone: the supervisor calls ``reset`` before forking the workers.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

log = logging.getLogger("modelapi")

_StatKey = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    """The desired state at one generation."""

    generation: int  # bumps on every change
    unloaded: frozenset[str] = frozenset()  # models an operator unloaded: not served until loaded again
    # name -> reload counter: a counter that differs from the one last seen asks every worker to load that model
    # again (an explicit load retries even unchanged files)
    reloads: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unloaded", frozenset(self.unloaded))
        object.__setattr__(self, "reloads", MappingProxyType(dict(sorted(self.reloads.items()))))

    def to_json(self) -> bytes:
        body = {"generation": self.generation, "unloaded": sorted(self.unloaded), "reloads": dict(self.reloads)}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, raw: bytes) -> Snapshot:
        """Parse the file's content; ``ValueError`` when it is not a well-formed state."""
        data: Any = orjson.loads(raw)  # orjson.JSONDecodeError is a ValueError
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        generation, unloaded, reloads = data.get("generation"), data.get("unloaded"), data.get("reloads")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValueError("generation is not a non-negative integer")
        if not isinstance(unloaded, list) or not all(isinstance(n, str) for n in unloaded):
            raise ValueError("unloaded is not a list of names")
        if not isinstance(reloads, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in reloads.values()
        ):
            raise ValueError("reloads is not an object of counters")
        return cls(generation, frozenset(unloaded), reloads)


EMPTY = Snapshot(0)


def _key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SharedState:
    """One process's handle on the shared desired-state file at ``path``; each worker makes its own.

    ``read`` and ``changed`` never raise for a missing or corrupt file; the writes (``unload``, ``load``,
    ``reset``) raise ``OSError`` when the state directory cannot be written. The writes block for a few
    milliseconds (``fsync``, and the lock while another worker writes): call them via ``asyncio.to_thread`` from
    a busy event loop. A snapshot this object wrote or returned counts as seen: ``changed`` does not report a
    worker's own change back to it, so the worker that made a change applies it itself.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.Lock()  # guards the fields below, for callers that use threads
        self._good: Snapshot = EMPTY  # the last well-formed content read or written
        self._key: _StatKey | None = None  # the stat of the file that content came from; None: no file
        self._seen = 0  # the generation this object last returned or wrote

    # -- reading --------------------------------------------------------------------------------------------------

    def read(self) -> Snapshot:
        """The current state: empty when there is no file, the last good one when the file is corrupt."""
        with self._mutex:
            snap = self._load()
            self._seen = snap.generation
            return snap

    def current(self) -> Snapshot:
        """The current state, as cheaply as ``changed`` (one ``stat`` while the file is unchanged), without
        marking it seen: for a poller that keeps its own account of what it applied."""
        with self._mutex:
            try:
                key: _StatKey | None = _key(os.stat(self.path))
            except FileNotFoundError:
                key = None
            except OSError as exc:
                log.warning("cannot stat the shared model state %s: %s", self.path, exc)
                return self._good
            return self._good if key == self._key else self._load()

    def changed(self) -> Snapshot | None:
        """A cheap poll: the new state when its generation differs from the last one seen here, else ``None``.

        Costs one ``stat`` while the file is unchanged (same device, inode, size and mtime); it is re-read only
        when that changes, which every write does, since each one renames a new file into place."""
        with self._mutex:
            try:
                key: _StatKey | None = _key(os.stat(self.path))
            except FileNotFoundError:
                key = None
            except OSError as exc:
                log.warning("cannot stat the shared model state %s: %s", self.path, exc)
                return None
            snap = self._good if key == self._key else self._load()
            if snap.generation == self._seen:
                return None
            self._seen = snap.generation
            return snap

    def _load(self) -> Snapshot:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._key, self._good = None, EMPTY
            return EMPTY
        except OSError as exc:
            log.warning("cannot open the shared model state %s: %s; keeping the last good state", self.path, exc)
            return self._good
        with os.fdopen(fd, "rb") as f:
            key = _key(os.fstat(f.fileno()))  # the stat of exactly the file read, even if one replaces it now
            raw = f.read()
        self._key = key  # also for a corrupt file, so that one is warned about once, not on every poll
        try:
            self._good = Snapshot.from_json(raw)
        except ValueError as exc:
            log.warning(
                "the shared model state %s is corrupt (%s); keeping the last good state, generation %d",
                self.path,
                exc,
                self._good.generation,
            )
        return self._good

    # -- writing --------------------------------------------------------------------------------------------------

    def unload(self, name: str) -> Snapshot:
        """Mark ``name`` unloaded: no worker serves it until it is loaded again."""
        return self._update(lambda s: Snapshot(s.generation + 1, s.unloaded | {name}, s.reloads))

    def load(self, name: str) -> Snapshot:
        """Serve ``name`` again, and ask every worker to load it anew (even from unchanged files)."""
        return self._update(
            lambda s: Snapshot(s.generation + 1, s.unloaded - {name}, {**s.reloads, name: s.reloads.get(name, 0) + 1})
        )

    def reset(self) -> None:
        """Start from the files: nothing unloaded, no reloads asked. The generation still moves on, never back, so
        a reader holding an older snapshot sees the change."""
        self._update(lambda s: Snapshot(s.generation + 1))

    def remove(self) -> None:
        """Delete the file and its lock (the server that owned them has stopped)."""
        for path in (self.path, self.lock_path):
            path.unlink(missing_ok=True)

    def _update(self, change: Callable[[Snapshot], Snapshot]) -> Snapshot:
        with self._mutex:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # released by the close below
                new = change(self._load())
                self._write(new)
                self._key = _key(os.stat(self.path))
                self._good = new
                self._seen = new.generation
                return new
            finally:
                os.close(lock_fd)

    def _write(self, snap: Snapshot) -> None:
        # mkstemp creates the file 0o600, whatever the umask; os.replace gives the state file that mode
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(snap.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable; a directory that cannot be opened or synced is no error
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


async def poll(
    state: SharedState,
    on_change: Callable[[Snapshot], Awaitable[None]],
    interval_s: float = 0.5,
    since: int | None = None,
) -> None:
    """Call ``on_change`` with each state whose generation differs from the last one passed (at first:
    ``since``, default the generation now), every ``interval_s``; runs until cancelled. It keeps its own
    account (``state.current``), so a read of the same file elsewhere in the process never hides a change
    from it. An exception from ``on_change`` is logged and polling goes on; that snapshot counts as passed."""
    last = state.current().generation if since is None else since
    while True:
        try:
            snap = state.current()
            if snap.generation != last:
                last = snap.generation
                await on_change(snap)
        except Exception:
            log.exception("applying the shared model state %s failed", state.path)
        await asyncio.sleep(interval_s)
