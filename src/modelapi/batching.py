"""Adaptive batching: requests for one model gathered into row-capped batches. Knows nothing about HTTP.

A ``Batcher`` runs at most one batch at a time. A request that finds the model idle runs at once, alone, so
batching adds no latency at low load. Requests that arrive while a batch runs wait; when it ends, the waiting
requests that share the oldest one's compatibility key are concatenated along axis 0, oldest first, up to
``max_batch_size`` rows (stopping at the first that does not fit), and run as the next batch (optionally after
waiting up to ``max_delay_ms`` from the oldest one's arrival for more rows). A single request larger than
``max_batch_size`` runs alone. Outputs are split back by row counts. A batch that raises is retried in halves, so
one poisoned request fails alone, with its own error, and the others succeed.

``run`` is a plain function of the concatenated inputs; where it runs is the caller's choice (``executor``:
``None`` runs it inline on the event loop, else on that executor, e.g. one dedicated thread per model).

With an executor and ``inline`` (given for library formats whose cost follows their rows: scikit-learn, ONNX,
XGBoost, LightGBM; never for a Python class, whose one call may take seconds where others took microseconds,
and would hold the event loop, health probes included, that long), a batch runs inline on the event loop
instead when the model is known to be cheap: at least
three quarters of its last ``INLINE_WINDOW`` runs took at most ``INLINE_BUDGET_S`` each (timed on the thread
that ran them: on the event loop, the wall-clock time, which is how long the loop was held; on the model's
thread, the lesser of that and the thread's CPU time, since there a run waits for the GIL the busy event loop
holds, which is not the model's cost and would otherwise keep a cheap model off the loop for good once one
preempted run sent it there), and the batch has at most
twice the rows of the largest of those runs. Handing a small batch to the model's thread and back costs a queue
put, two thread wake-ups and a GIL hand-off, a quarter of a small model's predict (docs/benchmarks-log.md). A slow
model, a much larger batch than any measured, or tracing (whose predict spans are made on the model's thread)
keep the thread, so a model that turns slow holds the event loop for at most a quarter of a window of runs
before its batches go back to the thread. A request that finds a cheap model idle does not run at once but
forms its batch after one turn of the event loop: the requests that arrived in the same turn join it (nothing
else runs on the loop while an inline batch runs, so without this every request would find the model idle and
run alone). When none joined, it runs its batch itself; a batch that others joined runs in a task of its own.
A caller that knows no other request is in progress (the HTTP front end counts them) skips that turn:
``run_now`` runs the rows at once when the model is idle and cheap, with no future, task or turn of the loop.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import tracing

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray], int], Mapping[str, np.ndarray]]
#: told of every batch run: rows, requests, seconds
OnBatch = Callable[[int, int, float], None]
#: a batch runs inline on the event loop when three quarters of the model's last INLINE_WINDOW runs took at most this
INLINE_BUDGET_S = 0.001
INLINE_WINDOW = 16
#: how far the expected wait's moving averages (batch time, drain per row) move towards a new typical measurement:
#: down faster than up, since an estimate too high refuses requests the server would answer in time, while one too
#: low admits requests that their queue deadline still bounds (``submit``'s ``deadline``)
RISE = 0.2
FALL = 0.5
#: a measurement of the batch time or the drain not made yet (``_averaged``)
UNSEEN = -math.inf
#: ``_take`` sweeps the whole queue (drops its cancelled and expired requests, recounts its rows) when at most this
#: many are left in it, or when the last sweep is this old: a request out of queue time behind the batch taken is
#: answered within about that, and stops counting in ``expected_answer``
SWEEP_ALL = 64
SWEEP_S = 0.05


class Timing:
    """Filled in by the batcher for one request: seconds waiting for its batch, seconds its batch ran."""

    __slots__ = ("compute_s", "queue_s")

    def __init__(self) -> None:
        self.queue_s = 0.0
        self.compute_s = 0.0


class BatcherClosed(RuntimeError):
    """The model was unloaded while the request waited (or the request came after)."""


class QueueExpired(RuntimeError):
    """The request's queue deadline passed before a batch took it: its rows never reached the model."""


class CallerGone(RuntimeError):
    """The request's caller had gone (``submit``'s ``gone``) when a batch would have taken it: its rows never reached
    the model."""


#: an expired request's result, for which ``submit`` raises ``QueueExpired`` in the request's own frames. Set on
#: the future as an exception instead, it would be held by the future that the traceback's frames hold: a
#: reference cycle per dropped request, left for the collector (under a flood, most of what it collects)
_EXPIRED: Arrays = {}
#: a request's result whose caller had gone (``CallerGone``), for the same reason
_GONE: Arrays = {}


def _unless_dropped(result: Arrays) -> Arrays:
    if result is _EXPIRED:
        raise QueueExpired("the queue-time limit ran out")
    if result is _GONE:
        raise CallerGone("the caller went away while its rows waited")
    return result


@dataclass(frozen=True)
class BatchPolicy:
    """How one model batches. ``enabled=False``: every request runs on its own, concurrently."""

    enabled: bool = True
    max_batch_size: int = 1024
    max_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 row, got {self.max_batch_size}")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise ValueError(f"max_delay_ms must be between 0 and 10000, got {self.max_delay_ms}")


def parse_policy(text: str, base: BatchPolicy) -> BatchPolicy:
    """``off`` | ``on`` | ``MAX_ROWS`` | ``MAX_ROWS,DELAY_MS``, over ``base`` (e.g. ``64,2``)."""
    spec = text.strip().lower()
    if spec in ("off", "false", "no", "0"):
        return BatchPolicy(False, base.max_batch_size, base.max_delay_ms)
    if spec in ("on", "true", "yes"):
        return BatchPolicy(True, base.max_batch_size, base.max_delay_ms)
    size, _, delay = spec.partition(",")
    try:
        return BatchPolicy(True, int(size), float(delay) if delay else base.max_delay_ms)
    except ValueError as exc:
        raise ValueError(f"batching {text!r}: expected off, on, MAX_ROWS or MAX_ROWS,DELAY_MS ({exc})") from None


def batch_key(version: str, outputs: Any, parameters: Any, shapes: tuple[Any, ...] = ()) -> Hashable:
    """What requests must share to share a batch: the model version, the requested outputs and parameters,
    and ``shapes``: the row shapes of inputs whose signature leaves them open (the rest already agree)."""
    return (
        version,
        tuple(outputs) if outputs is not None else None,
        _freeze(parameters) if parameters else None,
        shapes,
    )


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value if isinstance(value, Hashable) else repr(value)


class _Item:
    __slots__ = ("arrived", "deadline", "future", "gone", "inputs", "key", "rows", "timing", "trace")

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        key: Hashable,
        future: asyncio.Future[Arrays],
        timing: Timing | None,
        deadline: float | None,
        gone: Callable[[], bool] | None,
    ):
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.timing = timing
        self.deadline = deadline  # a time.monotonic() after which the rows are dropped unrun (None: never)
        self.gone = gone  # whether the caller has gone: then the rows are dropped unrun (None: never asked)
        self.arrived = time.monotonic()
        #: the submitting request's trace context and arrival, when tracing is on (its queue span, batch links)
        self.trace = tracing.capture() if tracing.ON else None


class Batcher:
    """One model's queue. ``submit`` from the event loop; ``close`` from any thread."""

    def __init__(
        self,
        run: RunFn,
        policy: BatchPolicy,
        executor: Executor | None = None,
        on_batch: OnBatch | None = None,
        trace_attributes: Mapping[str, str] | None = None,
        inline: bool = False,
    ) -> None:
        self.run = run
        self.inline = inline and executor is not None
        #: on every queue and predict span (the model and version)
        self.trace_attributes: Mapping[str, str] = trace_attributes or {}
        self.on_batch = on_batch
        self.policy = policy
        self.executor = executor
        self._pending: deque[_Item] = deque()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._queued_rows = (
            0  # rows waiting for a batch (cancelled ones too, until ``_take`` or ``_dispatch`` drops them)
        )
        self._swept_at = -math.inf  # when ``_take`` last swept the whole queue
        #: moving average of recent batches' run time, fed the median of the last three runs (``_averaged``), so
        #: that one stalled run moves it not at all (0: none ran yet); and the two runs before the newest, older
        #: first (none yet: the first run counts alone, then the lesser of the first two). A list, as is
        #: ``_drain_seen``: CPython 3.11 shares an instance's attribute keys, and specialises reads of them, up to
        #: 29 attributes (this class has 29: no more can be added); past that every attribute read of the class takes
        #: the slow path (1.4 % more instructions a request at one connection, measured)
        self._batch_s = 0.0
        self._batch_seen = [math.inf, UNSEEN]
        self._running_since = 0.0
        self._running_requests = 0
        #: calls admitted into this version on their head whose bodies are still being read (the data plane
        #: counts them): they will be queued ahead of a call admitted now
        self.arriving = 0
        #: moving averages for the expected wait: rows per submitted request, and seconds per row of the queue's
        #: drain while it never emptied (from one batch's start to the next, so the event loop's other work
        #: between batches counts: under load that is most of a request's cost), never from a burst's first batch
        #: (the one that found the model idle, often of one request, whose run over its few rows overstates the
        #: time per row of the full batches behind it), fed the median of the last three measurements as the batch
        #: time is, except that the first counts only with the second, as the lesser of the two (until then the
        #: batch time stands for it, and no median could set a stall in it aside); 0 until measured twice
        self._rows_per_request = 1.0
        self._drain_s_per_row = 0.0
        self._drain_seen = [UNSEEN, UNSEEN]
        #: (start, rows) of the batch before while the queue has not emptied since it started (None: it has);
        #: rows 0 where that batch was the first of its burst (``_run_and_split``), whose drain is not measured
        self._drained_from: tuple[float, int] | None = None
        #: rows of every batch run, newest last (the last 1000), for tests and diagnostics
        self.batch_rows: deque[int] = deque(maxlen=1000)
        #: (rows, seconds) of the last runs, and the most rows a batch may have to run inline (0: none may);
        #: worked out once per run, so that the check per request is one comparison
        self._recent: deque[tuple[int, float]] = deque(maxlen=INLINE_WINDOW)
        self._inline_rows = 0
        self._over = 0  # runs in the window over INLINE_BUDGET_S
        self._most_rows = 0  # the window's largest run
        #: batches run inline on the event loop, for tests and diagnostics
        self.inline_runs = 0

    @property
    def busy(self) -> bool:
        """Whether a request submitted now would wait (a batch is running or forming)."""
        return self._busy or self._timer is not None

    def expected_answer(self, arriving: int = 0) -> float:
        """Seconds until a request submitted now can expect its batch to have run; 0 when the model is idle (it
        runs the request at once, whatever its batches take). First what is left of the running batch (or, with
        none running or forming, one batch for the first of the ``arriving`` requests, admitted but not submitted
        yet, which will find the model idle and run alone); then the rows queued, those of the other arriving
        requests and its own, at the recent rows per request: one recent batch time for every batch they make
        (requests are not split: a batch holds as many whole ones of that size as ``max_batch_size`` allows, at
        least one), or, once the queue has been seen draining under load, the time per row it took, whichever
        is longer. A request that joins a partly filled batch is answered when that batch has run; one that joins a
        forming batch (``max_delay_ms``) also waits what is left of its delay, unless the rows counted fill it.

        Both times are moving averages of the median of their last three measurements, which move down faster than
        up: one stall (the machine paused, a collection, a batch shape not run before) moves neither, and a lasting
        change of the model's speed passes from its second measurement. Until three are known, the lesser of those
        there counts; the first drain measured counts only with the second (``_drain_seen``). No drain is measured
        from a burst's first batch, the one that found the model idle (``_run_and_split``)."""
        busy, timer, limit = self._busy, self._timer, self.policy.max_batch_size
        per_request = self._rows_per_request
        if not busy and timer is None:
            if not arriving:
                return 0.0
            left = self._batch_s  # the first arriving runs alone; the rest, and this one, after it
            rows = self._queued_rows + arriving * per_request
        else:
            rows = self._queued_rows + (arriving + 1) * per_request
            if busy:
                left = max(self._batch_s - (time.monotonic() - self._running_since), 0.0)
            else:  # forming: it starts when its delay runs out, or once full (submit dispatches it then)
                assert timer is not None and self._loop is not None
                left = max(timer.when() - self._loop.time(), 0.0) if rows < limit else 0.0
        # whole requests a batch holds, at the average size (below 1 only after requests of no rows); the average
        # only nears a steady size, so the count is rounded before its ceiling is taken
        size = max(per_request, 1.0)
        fit = max(int(limit / size + 1e-6), 1)
        batches = math.ceil(round(rows / size / fit, 2))
        return left + max(batches * self._batch_s, rows * self._drain_s_per_row)

    @property
    def waiting(self) -> int:
        """Requests waiting for a batch (not counting the running one)."""
        return sum(1 for item in self._pending if not item.future.done())

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        key: Hashable = None,
        timing: Timing | None = None,
        deadline: float | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Arrays:
        """Run ``inputs`` (``rows`` rows) in some batch and return its own rows of every output; ``timing``, when
        given, receives the request's queue and compute seconds. ``deadline`` (a ``time.monotonic()``): when no
        batch has taken the rows by then, they are dropped unrun and ``QueueExpired`` is raised. ``gone``: whether
        the caller has gone away, asked as a batch would take the rows: if so, they are dropped unrun and
        ``CallerGone`` is raised (a check where a batch forms, rather than a task per request that waits for it)."""
        if self._closed:
            raise BatcherClosed("the model is unloaded")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._busy, self._timer, self._task = loop, False, None, None
            self._pending.clear()
            self._queued_rows = 0
        future: asyncio.Future[Arrays] = loop.create_future()
        self._pending.append(_Item(inputs, rows, key, future, timing, deadline, gone))
        self._queued_rows += rows
        self._rows_per_request += 0.1 * (rows - self._rows_per_request)
        if not self._busy:
            if self._timer is None:
                if self._dispatch(idle=len(self._pending) == 1):
                    return _unless_dropped(await self._lead(future, key))
            elif self._rows_for(key) >= self.policy.max_batch_size:  # full before the delay ran out
                self._timer.cancel()
                self._dispatch()
        # a cancelled waiter is skipped when batches form, or its answer dropped
        return _unless_dropped(await future)

    def run_now(self, inputs: Mapping[str, np.ndarray], rows: int, timing: Timing | None = None) -> Arrays | None:
        """``inputs``' outputs, run at once on the event loop, when waiting could gain nothing: the caller knows no
        other call for this model is in flight (none could join a batch), the model is idle, nothing waits, and
        the model is cheap enough to run inline. Else ``None``, and the caller submits.

        At one connection this is every request: without the loop's turn, future and wake-up that forming a batch
        costs (docs/benchmarks-log.md). A model error is raised to the caller, as ``submit`` raises it."""
        if self._busy or self._timer is not None or self._pending or self._closed or not self._cheap(rows):
            return None
        if asyncio.get_running_loop() is not self._loop:
            return None  # a loop it has not served: submit resets what it knew
        self._busy = True
        self._rows_per_request += 0.1 * (rows - self._rows_per_request)
        self.batch_rows.append(rows)
        self.inline_runs += 1
        started = self._running_since = time.monotonic()
        self._running_requests = 1
        try:
            outputs = self.run(inputs, rows)
        except Exception:
            self._ran(rows, time.monotonic() - started)
            raise
        finally:
            self._busy = False
            self._running_requests = 0
            self._drained_from = None  # nothing was queued, and nothing could queue meanwhile: no drain to measure
        seconds = time.monotonic() - started
        self._finished(rows, 1, seconds, seconds)
        if timing is not None:
            timing.queue_s = 0.0
            timing.compute_s = seconds
        return dict(outputs)

    def _finished(self, rows: int, requests: int, seconds: float, ran: float) -> None:
        """A batch of ``rows`` rows for ``requests`` requests ran without error: ``seconds`` from its start to its
        outputs, ``ran`` the run itself (without a hand-off to the model's thread and back)."""
        # _averaged(self._batch_s, self._batch_seen, seconds), inlined: at one connection this runs every request
        seen = self._batch_seen
        lo, hi = seen[0], seen[1]
        seen[0], seen[1] = hi, seconds
        if lo > hi:
            lo, hi = hi, lo
        typical = lo if seconds < lo else hi if seconds > hi else seconds
        if lo == UNSEEN:
            self._batch_s = typical  # fewer than three runs: the lesser of those there
        else:
            a = self._batch_s
            self._batch_s = a + (FALL if typical < a else RISE) * (typical - a)
        self._ran(rows, ran)
        if self.on_batch is not None:
            self.on_batch(rows, requests, seconds)

    def _cheap(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows may run inline (see the module's docstring)."""
        return rows <= self._inline_rows and not tracing.ON

    def _ran(self, rows: int, seconds: float) -> None:
        """Record a run: at most a quarter of the window's runs over the budget keeps the model cheap."""
        recent = self._recent
        # the window's count of runs over the budget and its largest run, kept as runs come and go (not
        # recounted at every batch, which at one connection is every request)
        evicted = recent[0] if len(recent) == INLINE_WINDOW else None
        recent.append((rows, seconds))
        self._over += seconds > INLINE_BUDGET_S
        if evicted is not None:
            self._over -= evicted[1] > INLINE_BUDGET_S
        if rows >= self._most_rows:
            self._most_rows = rows
        elif evicted is not None and evicted[0] == self._most_rows:
            self._most_rows = max(n for n, _ in recent)
        cheap = self.inline and len(recent) == INLINE_WINDOW
        if cheap and self._over <= INLINE_WINDOW // 4:
            self._inline_rows = 2 * self._most_rows
        else:
            self._inline_rows = 0

    async def _lead(self, future: asyncio.Future[Arrays], key: Hashable) -> Arrays:
        """The request that found a cheap model idle: after one turn of the event loop (the requests read in it
        join its batch), it runs the batch itself when none joined, without the task, wake-up and turn of the
        loop a batch run elsewhere costs (at one connection, docs/benchmarks-log.md); a batch others joined runs in a
        task of its own, so that no request's cancellation stops the others' batch."""
        loop = self._loop
        assert loop is not None
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            future.cancel()  # its rows are skipped; the others that joined still get their batch
            self._task = loop.create_task(self._execute(None, key))
            raise
        pending = self._pending
        alone = len(pending) == 1 and pending[0].future is future and not future.done()
        if alone and not self._closed and self._cheap(pending[0].rows):
            # one request, inline on the loop: nothing in _execute awaits (no executor, no halves to retry)
            await self._execute(self._take(key, self.policy.max_batch_size))
            return future.result()
        self._task = loop.create_task(self._execute(self._take(key, self.policy.max_batch_size)))
        return await future

    # forming batches ---------------------------------------------------------------------------------------
    def _dispatch(self, idle: bool = False) -> bool:
        """Start the next batch, or its timer; ``True`` when the submitter is to lead an inline one (``_lead``)."""
        self._timer = None
        pending = self._pending
        now = time.monotonic()
        while pending:
            first = pending[0]
            # (the caller gone before out of time: nobody is there to be told it waited too long)
            if first.gone is not None and first.gone():
                dropped = _GONE
            elif first.future.done() or (first.deadline or now) < now:
                dropped = _EXPIRED  # cancelled while waiting, or out of queue time
            else:
                break
            pending.popleft()
            self._queued_rows -= first.rows  # else, when all had expired, an idle model would count their rows
            _settle(first.future, dropped)
        if not pending:
            self._drained_from = None  # only expired requests were left: the queue emptied
            return False
        if self._busy or self._loop is None:
            return False
        head = pending[0]
        limit = self.policy.max_batch_size
        if not idle and self.policy.max_delay_ms > 0 and head.rows < limit:
            due = head.arrived + self.policy.max_delay_ms / 1000
            if time.monotonic() < due and self._rows_for(head.key) < limit:
                self._timer = self._loop.call_at(self._loop.time() + due - time.monotonic(), self._dispatch)
                return False
        self._busy = True
        if idle and self._cheap(head.rows):  # formed after a turn of the loop, so that this turn's requests join
            return True
        self._task = self._loop.create_task(self._execute(self._take(head.key, limit)))
        return False

    def _rows_for(self, key: Hashable) -> int:
        return sum(i.rows for i in self._pending if i.key == key and not i.future.done())

    def _take(self, key: Hashable, limit: int) -> list[_Item]:
        """The next batch: the oldest waiting requests of ``key``, in order, while they fit ``limit`` rows (the first
        alone if it is larger), dropping on the way those cancelled, out of queue time or whose caller has gone. It
        stops at the first request of ``key`` that does not fit: no later request overtakes an older one. The rest of
        the queue is swept (its cancelled, expired and abandoned requests dropped, its rows recounted) only while it
        is short (``SWEEP_ALL``) or ``SWEEP_S`` since the last sweep: under a flood, walking every request waiting
        for each batch took about a tenth of the server's core (docs/overload-log.md), and a sweep that often bounds
        how long a request out of queue time waits for its answer, and how long dead rows count in
        ``expected_answer``."""
        batch: list[_Item] = []
        rows = 0
        skipped: list[_Item] = []  # other keys' requests passed on the way, put back in their order
        pending = self._pending
        gone = 0  # rows leaving the queue: the batch's and the dropped ones'
        now = time.monotonic()
        while pending and rows < limit:
            item = pending.popleft()
            if item.future.done():
                gone += item.rows
                continue
            if item.gone is not None and item.gone():  # nobody to answer
                gone += item.rows
                _settle(item.future, _GONE)
                continue
            if item.deadline is not None and item.deadline < now:  # waited too long: never reaches the model
                gone += item.rows
                _settle(item.future, _EXPIRED)
                continue
            if item.key != key:
                skipped.append(item)
            elif not batch or rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
                gone += item.rows
            else:
                pending.appendleft(item)  # the next batch's first
                break
        if not pending and not skipped:  # the whole queue taken or dropped: the common case at low load
            self._queued_rows = 0
        elif len(pending) <= SWEEP_ALL or now >= self._swept_at + SWEEP_S:
            self._swept_at = now
            live: deque[_Item] = deque(skipped)
            for item in pending:
                if item.future.done():
                    continue
                if item.gone is not None and item.gone():
                    _settle(item.future, _GONE)
                    continue
                if item.deadline is not None and item.deadline < now:
                    _settle(item.future, _EXPIRED)
                    continue
                live.append(item)
            self._pending = live
            self._queued_rows = sum(item.rows for item in live)
        else:
            if skipped:
                pending.extendleft(reversed(skipped))
            self._queued_rows -= gone
        # the batch starts now: until its run stamps it, what is left of the running batch is its own (the task
        # that runs it starts a turn of the loop later, and heads read in this turn would find nothing left)
        self._running_since = now
        return batch

    async def _execute(self, batch: list[_Item] | None, key: Hashable = None) -> None:
        if batch is None:
            batch = self._take(key, self.policy.max_batch_size)
        if tracing.ON:
            waited = [item.trace for item in batch if item.trace is not None and not item.future.done()]
            tracing.queued(waited, self.trace_attributes)
        self._running_requests = len(batch)
        try:
            await self._run_and_split(batch)
        finally:
            self._busy = False
            self._task = None
            self._running_requests = 0
            if self._pending and not self._closed:
                self._dispatch()
            else:
                self._drained_from = None  # the queue emptied: the next batch's start measures no drain

    # running them ------------------------------------------------------------------------------------------
    async def _run_and_split(self, batch: list[_Item], retry: bool = False) -> None:
        """Run ``batch``; when it fails, its halves (``retry``), down to the request that made it fail."""
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        rows = sum(item.rows for item in live)
        self.batch_rows.append(rows)
        started = self._running_since = time.monotonic()
        drained = self._drained_from
        # a failed batch's halves are its own runs, not batches the queue drained (and each half's run over its
        # few rows, down to one request's, overstates the time per row): the queue's next batch measures the drain
        # from the failed batch's start over its rows, the whole retry included, once
        if not retry:
            if drained is not None and drained[1]:  # the queue stayed non-empty since the batch before started,
                since, before = drained  # and that batch was not the first of its burst
                per_row = (started - since) / before
                self._drain_s_per_row = _averaged(self._drain_s_per_row, self._drain_seen, per_row)
            # None: the queue emptied since the batch before, so this one is the first of its burst (it found the
            # model idle: the request that did, and those that came in its turn of the loop), with nothing queued
            # behind it when it started: its time per row (often over one request's rows) is not the queue's drain
            self._drained_from = (started, rows if drained is not None else 0)
        run = self.run
        if tracing.ON:
            traced = [item.trace[0] for item in live if item.trace is not None]
            if traced:  # one predict span per batch run, created on the thread that runs it
                run = functools.partial(tracing.run_batch, self.run, traced, self.trace_attributes)
        try:
            inputs = live[0].inputs if len(live) == 1 else concat([item.inputs for item in live])
            if self.executor is None or self._cheap(rows):
                self.inline_runs += self.executor is not None
                outputs = run(inputs, rows)
                ran = time.monotonic() - started
            else:
                assert self._loop is not None
                outputs, ran = await self._loop.run_in_executor(self.executor, _timed, run, inputs, rows)
        except Exception as exc:
            self._ran(rows, time.monotonic() - started)
            if len(live) == 1:
                _settle(live[0].future, exc=exc)
                return
            half = len(live) // 2
            await self._run_and_split(live[:half], retry=True)
            await self._run_and_split(live[half:], retry=True)
            return
        seconds = time.monotonic() - started
        for item in live:
            if item.timing is not None:
                item.timing.queue_s = started - item.arrived
                item.timing.compute_s = seconds
        self._finished(rows, len(live), seconds, ran)
        if len(live) == 1:
            _settle(live[0].future, dict(outputs))
            return
        for item, part in zip(live, split(outputs, [item.rows for item in live]), strict=True):
            _settle(item.future, part)

    # shutting down -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Fail whatever still waits (from any thread); a running batch finishes."""
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def fail_waiting() -> None:
            if self._timer is not None:
                self._timer.cancel()
            while self._pending:
                _settle(self._pending.popleft().future, exc=BatcherClosed("the model was unloaded"))

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fail_waiting()
        else:
            loop.call_soon_threadsafe(fail_waiting)


def _averaged(average: float, seen: list[float], sample: float) -> float:
    """``average`` (a batch time, or a drain's time per row) moved towards the median of ``sample`` and ``seen``,
    the two measurements before it (older first; shifted here): one outlier (a stall: the machine paused, a
    collection, a warm-up) is ignored, a lasting change passes from its second measurement, and the average then
    moves ``FALL`` of the way down or ``RISE`` up. Until three are known, the lesser of those there is taken
    outright (optimistic: a request expected too soon is still bounded by its queue deadline, where one refused on
    a stall's estimate is lost). A measurement not made yet is ``UNSEEN`` (below any), except that ``seen`` starts
    at ``[inf, UNSEEN]`` where the first measurement is to count alone; with both ``UNSEEN``, the first leaves
    ``average`` as it is. Comparisons only, no sorting or allocation."""
    lo, hi = seen[0], seen[1]
    seen[0], seen[1] = hi, sample
    if lo > hi:
        lo, hi = hi, lo
    typical = lo if sample < lo else hi if sample > hi else sample
    if lo != UNSEEN:
        return average + (FALL if typical < average else RISE) * (typical - average)
    return typical if typical != UNSEEN else average


def _timed(run: RunFn, inputs: Mapping[str, np.ndarray], rows: int) -> tuple[Mapping[str, np.ndarray], float]:
    """``run``'s outputs and the seconds it took on the thread that runs it: the lesser of the wall-clock time and
    the thread's CPU time (neither a preemption nor a wait for the GIL is the model's cost)."""
    started, cpu_started = time.monotonic(), time.thread_time()
    outputs = run(inputs, rows)
    return outputs, min(time.monotonic() - started, time.thread_time() - cpu_started)


def _settle(future: asyncio.Future[Arrays], result: Arrays | None = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


def concat(parts: list[Mapping[str, np.ndarray]]) -> Arrays:
    """Requests' inputs joined along axis 0 (object arrays of strings too)."""
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def split(outputs: Mapping[str, np.ndarray], rows: list[int]) -> list[Arrays]:
    """A batch's outputs back into one mapping per request, by row counts (views, no copies)."""
    arrays = [(name, np.asarray(arr)) for name, arr in outputs.items()]
    parts: list[Arrays] = []
    start = 0
    for n in rows:
        end = start + n
        parts.append({name: arr[start:end] for name, arr in arrays})
        start = end
    return parts
