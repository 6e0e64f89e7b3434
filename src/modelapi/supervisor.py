"""N worker processes serving one port, and the supervisor (the parent) that keeps them running.

The parent binds the listening sockets (one per worker, all on the same port with SO_REUSEPORT where the
platform has it, else one shared socket) and forks the workers; worker ``i`` serves socket ``i`` with its own
event loop. The parent keeps every socket open: while a dead worker is being replaced its socket goes on
queueing connections, and the replacement, which inherits the same socket, accepts them. Workers fork before
any model is loaded and load their models themselves: onnxruntime, OpenMP and other thread pools do not
survive a fork, and the libraries' pages (imported before the fork) are shared copy-on-write.

The supervisor:

- prints nothing itself; ``on_ready`` gets the first worker's banner once every worker is ready;
- calls ``on_exit(pid)`` for every worker it reaps, before a replacement starts (the server drops the dead
  worker's metric gauges there);
- restarts a worker that dies (with a growing pause if replacements keep failing before they are ready);
- on SIGTERM or SIGINT turns every worker not-ready, closes its own copies of the sockets, forwards SIGTERM
  (each worker serves on for its shutdown delay, if any, then stops accepting and drains within the grace
  period; workers still running ``KILL_MARGIN_S`` after both are killed), and returns once all have exited;
  a SIGINT while shutting down (a second Ctrl+C) is forwarded as SIGINT, which makes the workers stop at
  once; a repeated SIGTERM changes nothing (systemd and ``timeout`` signal the whole process group);
- raises ``ModelLoadError`` if a worker fails before the first start completed (a model that cannot load).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from . import logs
from .errors import ModelLoadError

_FORWARDED = {signal.SIGTERM, signal.SIGINT}

log = logging.getLogger("modelapi")

#: seconds the supervisor waits beyond the shutdown delay and grace period before it kills workers that still run
KILL_MARGIN_S = 5.0
MAX_RESTART_DELAY_S = 30.0


@dataclass(frozen=True)
class WorkerContext:
    """What a worker gets from the supervisor."""

    index: int
    #: started to replace a worker that died: load the models before accepting connections
    replacement: bool
    #: True once every worker of the first start was ready, until shutdown begins
    cluster_ready: Callable[[], bool]
    report_ready: Callable[[str], None]
    report_failed: Callable[[BaseException], None]


WorkerMain = Callable[[WorkerContext], int]


@dataclass
class _Worker:
    index: int
    pid: int
    status_fd: int
    replacement: bool
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    failure: str | None = None
    buffer: bytes = b""


class Supervisor:
    def __init__(
        self,
        workers: int,
        main: WorkerMain,
        *,
        sockets: Sequence[socket.socket],
        grace_period_s: float,
        shutdown_delay_s: float = 0.0,
        on_ready: Callable[[str], None] = lambda banner: None,
        on_exit: Callable[[int], None] = lambda pid: None,
        kill_margin_s: float = KILL_MARGIN_S,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.size = workers
        self._main = main
        self._sockets = list(sockets)  # the listeners, kept open here while workers come and go
        self._grace_period_s = grace_period_s
        #: each worker serves this long after SIGTERM before it drains (``--shutdown-delay``): its kill comes later
        self._shutdown_delay_s = shutdown_delay_s
        self._on_ready = on_ready
        self._on_exit = on_exit
        self._kill_margin_s = kill_margin_s
        self._flag = mmap.mmap(-1, 1)  # shared with the workers: cluster readiness
        self._workers: dict[int, _Worker] = {}
        self._selector = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._all_ready_once = False
        self._stopping_since: float | None = None
        self._killed = False
        self._startup_error: str | None = None
        self._restarts: list[tuple[float, int]] = []  # (when, index)
        self._failures_in_a_row = 0
        self._parent_fds: list[int] = []

    # public -----------------------------------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values()]

    def run(self) -> int:
        """Supervise until shut down; 0 after a clean shutdown, 1 when workers had to be killed."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._parent_fds = [wake_r, wake_w]
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            for index in range(self.size):
                self._spawn(index, replacement=False)
            while self._workers or self._stopping_since is None:
                self._step(wake_r)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            for fd in (wake_r, wake_w):
                os.close(fd)
            self._close_sockets()
        if self._startup_error is not None:
            raise ModelLoadError(self._startup_error)
        return 1 if self._killed else 0

    # the loop ---------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _step(self, wake_r: int) -> None:
        for key, _ in self._selector.select(timeout=self._timeout()):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
            else:
                self._read_status(key.data)
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig == signal.SIGTERM and self._stopping_since is None:
                self._stop(force=False)
            elif sig == signal.SIGINT:
                self._stop(force=self._stopping_since is not None)
        self._reap()
        now = time.monotonic()
        if self._stopping_since is None:
            due = [index for when, index in self._restarts if when <= now]
            self._restarts = [(when, index) for when, index in self._restarts if when > now]
            for index in due:
                self._spawn(index, replacement=True)
        elif (
            now > self._stopping_since + self._shutdown_delay_s + self._grace_period_s + self._kill_margin_s
            and self._workers
        ):
            log.error(
                "workers %s still running %.0f s after SIGTERM: killing them", self.pids, now - self._stopping_since
            )
            self._killed = True
            for worker in self._workers.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self._stopping_since = now  # wait for the kills to be reaped, then leave

    def _timeout(self) -> float:
        if self._restarts:
            return max(0.0, min(when for when, _ in self._restarts) - time.monotonic())
        return 0.5

    # workers ----------------------------------------------------------------------------------------------
    def _spawn(self, index: int, *, replacement: bool) -> None:
        status_r, status_w = os.pipe()
        # Signals stay blocked across the fork: a SIGTERM that reaches a new worker before it has reset the
        # supervisor's handlers (copied into the child) stays pending instead of being swallowed by them.
        pid = -1
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                os._exit(self._child(index, replacement, status_r, status_w))
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        os.close(status_w)
        os.set_blocking(status_r, False)
        worker = _Worker(index, pid, status_r, replacement)
        self._workers[pid] = worker
        self._selector.register(status_r, selectors.EVENT_READ, worker)
        log.debug("worker %d started (pid %d)", index, pid)

    def _child(self, index: int, replacement: bool, status_r: int, status_w: int) -> int:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # held back across the fork (see _spawn): one that arrived meanwhile now ends this still-starting
            # worker by default action, which has nothing in flight to drain
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
            self._selector.close()
            for fd in (status_r, *self._parent_fds, *(w.status_fd for w in self._workers.values())):
                os.close(fd)
            flag = self._flag

            def send(message: dict[str, object]) -> None:
                with contextlib.suppress(OSError):
                    os.write(status_w, json.dumps(message).encode() + b"\n")

            def report_failed(exc: BaseException) -> None:
                send({"failed": f"{exc}" if isinstance(exc, ModelLoadError | ValueError | OSError) else repr(exc)})

            context = WorkerContext(
                index=index,
                replacement=replacement,
                cluster_ready=lambda: flag[0] == 1,
                report_ready=lambda banner: send({"ready": True, "banner": banner}),
                report_failed=report_failed,
            )
            code = self._main(context)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logs.flush()  # the access lines that wait: os._exit skips logging.shutdown
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        return code

    def _read_status(self, worker: _Worker) -> None:
        try:
            chunk = os.read(worker.status_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:  # the worker closed its end: it exited (reaped separately)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.status_fd)
            return
        worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if message.get("ready"):
                self._worker_ready(worker, str(message.get("banner", "")))
            elif "failed" in message:
                worker.failure = str(message["failed"])

    def _worker_ready(self, worker: _Worker, banner: str) -> None:
        worker.ready = True
        self._failures_in_a_row = 0
        if worker.replacement:
            log.info(
                "worker %d is back (pid %d, %.2f s after its start)",
                worker.index,
                worker.pid,
                time.monotonic() - worker.started,
            )
        elif (
            not self._all_ready_once
            and all(w.ready for w in self._workers.values())
            and len(self._workers) == self.size
        ):
            self._all_ready_once = True
            if self._stopping_since is None:
                self._flag[0] = 1
                self._on_ready(banner)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            self._read_status(worker)  # a failure report may still be in the pipe
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
            try:
                self._on_exit(pid)  # before any replacement starts (which may get the same pid)
            except Exception:
                log.exception("on_exit failed for worker %d (pid %d)", worker.index, pid)
            self._exited(worker, _describe(status))

    def _exited(self, worker: _Worker, how: str) -> None:
        if self._stopping_since is not None:
            log.debug("worker %d (pid %d) %s", worker.index, worker.pid, how)
            return
        if not self._all_ready_once:
            self._startup_error = worker.failure or f"worker {worker.index} {how} while starting"
            self._stop(force=False)
            return
        if worker.ready:
            delay = 0.0
            log.warning("worker %d (pid %d) %s; starting a replacement", worker.index, worker.pid, how)
        else:
            self._failures_in_a_row += 1
            delay = min(MAX_RESTART_DELAY_S, 0.5 * 2 ** (self._failures_in_a_row - 1))
            log.error(
                "replacement worker %d (pid %d) %s before it was ready%s; retrying in %.1f s",
                worker.index,
                worker.pid,
                how,
                f": {worker.failure}" if worker.failure else "",
                delay,
            )
        self._restarts.append((time.monotonic() + delay, worker.index))

    # shutdown ---------------------------------------------------------------------------------------------
    def _stop(self, *, force: bool) -> None:
        self._flag[0] = 0
        if force:
            log.warning("SIGINT while shutting down: stopping the workers now")
            self._signal_all(signal.SIGINT)
            return
        if self._workers and self._startup_error is None:
            if self._shutdown_delay_s:
                log.info(
                    "shutting down %d workers (shutdown delay %g s, then grace period %g s)",
                    len(self._workers),
                    self._shutdown_delay_s,
                    self._grace_period_s,
                )
            else:
                log.info("shutting down %d workers (grace period %g s)", len(self._workers), self._grace_period_s)
        self._stopping_since = time.monotonic()
        self._restarts.clear()
        self._close_sockets()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(sig).name}"
        return f"was killed by signal {sig}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
