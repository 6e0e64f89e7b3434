"""The data plane: one call into one model version, admitted, bounded, run and reported. Knows nothing about HTTP.

Every front end does the same three steps, with what it knows of the call in a ``CallContext``:

1. ``plane.call(name, ctx, version=, label=)`` resolves the version (``Repository.resolve``: 404/503), admits
   the call through the per-model gate (503 with ``Retry-After`` over ``max_inflight`` or the queue-time
   budget) and holds the version, so a reload that swaps it out lets this call finish on it. A front end that
   still has a body to read splits this in two: ``plane.admit(...)`` on the request's head (the refusal costs
   no body read, no parse), then ``admission.call()`` once the body is in (the version held only from then on,
   so a slow upload never holds a retiring version);
2. the front end decodes its body with ``call.signature`` (the version chosen, whose codec it is);
3. ``await call.infer(request)`` validates, runs the rows through the version's batcher (or alone), bounded by
   the inference timeout and the call's deadline (504), and answers with the version that produced it. Rows
   still queued when the queue-time limit runs out are dropped before their batch forms (503, ``queue_time``);
   with ``ctx.gone`` (asked by the queue as a batch forms) or ``ctx.disconnected`` (watched by a task), a caller
   that goes away while its rows wait is dropped the same way (499, ``disconnected``).

Leaving the ``with`` block releases the gate and the version and reports ``RequestFinished`` to ``Events``; a
``ModelAPIError`` that leaves it is stamped with the call's version (``exc.version``), so that the error answer
can name the version that refused it, as a prediction names the one that produced it.
``docs/batching.md`` has the measurements behind batching; ``repository/`` owns loading and reloading.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from . import tracing
from .batching import BatcherClosed, CallerGone, QueueExpired, Timing, batch_key
from .context import LOCAL, CallContext
from .errors import (
    BadRequest,
    ClientGone,
    InferenceError,
    InferenceTimeout,
    InvalidInput,
    ModelAPIError,
    ModelNotReady,
    Overloaded,
    QueueTimeout,
    TooManyRequests,
)
from .events import Events, PredictionsServed, RequestFinished, RequestRejected, RequestStarted
from .gate import OVERLOADED_RETRY_AFTER_S, REFUSING_FOR_S, ModelGate
from .inference import InferenceRequest, InferenceResponse
from .matching import output_aliases
from .models.base import Model
from .repository.handle import State, VersionHandle
from .repository.registry import Repository
from .repository.shared import SharedState
from .repository.sources import Sources
from .settings import Settings
from .signature import Signature

log = logging.getLogger("modelapi")
#: read once: an enum class's attribute read takes CPython's slow path (3.11's ``EnumType.__getattr__``)
_READY = State.READY


class DataPlane:
    def __init__(
        self,
        repository: Repository,
        *,
        max_rows: int | None = None,
        max_inflight: int = 512,
        inference_timeout_s: float | None = 60.0,
        max_queue_ms: float | None = None,
    ) -> None:
        self.repository = repository
        self.events: Events = repository.events
        self.max_rows = max_rows
        self.gate = ModelGate(max_inflight, None if max_queue_ms is None else max_queue_ms / 1000)
        #: ``shed``'s last refusal when it found every version at its in-flight limit, with the gate's ``moves`` and
        #: the repository's ``generation`` it holds for
        self._shed_full: tuple[int, int, Shed] | None = None
        self.inference_timeout_s = inference_timeout_s
        self.live = True

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        models: Sequence[Model] | None = None,
        shared: SharedState | None = None,
        events: Events | None = None,
    ) -> DataPlane:
        """The data plane for what ``settings`` name (or for ``models`` built in Python), with its repository."""
        sources = (
            Sources(models=models, settings=settings, shared=shared)
            if models is not None
            else Sources.from_settings(settings, shared)
        )
        repository = Repository(sources, events=events, grace_period_s=settings.grace_period_s)
        return cls(
            repository,
            max_rows=settings.max_rows,
            max_inflight=settings.max_inflight,
            inference_timeout_s=settings.inference_timeout_s,
            max_queue_ms=settings.max_queue_ms,
        )

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what the repository's sources want (once; a second call does nothing)."""
        if not self.repository.started:
            await self.repository.start()

    async def close(self) -> None:
        self.live = False
        await self.repository.close()

    @property
    def ready(self) -> bool:
        return self.live and self.repository.ready

    # reading ---------------------------------------------------------------------------------------------
    def resolve(
        self, name: str, ctx: CallContext = LOCAL, version: str | None = None, label: str | None = None
    ) -> VersionHandle:
        """The version a call to ``name`` would reach now (metadata routes); 404/503 as ``call`` would."""
        return self.repository.resolve(name, version, label, ctx.principal)

    def get(self, name: str, version: str | None = None, ctx: CallContext = LOCAL) -> Model:
        return self.resolve(name, ctx, version).model

    @property
    def models(self) -> dict[str, Model]:
        """Each ready model's default version (what the API documents describe)."""
        out: dict[str, Model] = {}
        for name in self.repository.ready_names():
            entry = self.repository.entry(name)
            default = entry.default_version
            if default is not None:
                out[name] = entry.serving[default].model
        return out

    @property
    def default_model(self) -> Model | None:
        """The only model's default version, when only one model is known and it is ready."""
        only = self.repository.only_model
        return None if only is None else self.models.get(only)

    def names(self, ctx: CallContext = LOCAL) -> list[str]:
        """The models the caller may see, ready or not."""
        principal = ctx.principal
        return [n for n in self.repository.names() if principal is None or principal.can_use(n)]

    def shed(self, waited_s: float = 0.0) -> Shed | None:
        """A refusal for a call arriving now that a front end can give before it reads the request (for HTTP, in
        the protocol, before any of the app runs): only while the gate is refusing (``ModelGate.refusing``), and only
        when every version of every ready model would refuse it on its head now, so the answer says nothing of
        which models exist (it may come before authentication); else ``None`` (one attribute read while the gate
        admits). ``waited_s``: how long the call has waited since its head arrived (a head read under a flood
        waits its turn: ``http/pacing.py``), counted against the queue-time budget as the gate counts it. Its
        ``Retry-After`` is booked in the schedule of returns only when the refusal is given
        (``gate.book(shed.schedule, shed.at_least)``): a request the front end hands on instead (an early
        retry, held and then answered "retry now") books no place of its own."""
        gate = self.gate
        if not gate.refusing:
            return None
        repository = self.repository
        kept = self._shed_full
        if kept is not None and kept[0] == gate.moves and kept[1] == repository.generation:
            return kept[2]
        entries = repository.ready_entries()
        refused: tuple[str, int] | None = None
        all_full = True
        for entry in entries:
            name = entry.name
            for handle in entry.serving.values():
                batcher = handle.batcher
                cap = gate.max_inflight if handle.max_inflight is None else handle.max_inflight
                # (no estimate for a version at its in-flight limit: refused whatever it says)
                full = gate.inflight.get(name, 0) >= cap
                all_full = all_full and full
                answer = batcher.expected_answer(batcher.arriving) if batcher is not None and not full else 0.0
                # the head's own wait, not an estimate: a head read at once after a flood's backlog (a client
                # coming back as its answer arrives) is not refused for the wait of those read before it
                refused = gate.refusal(name, handle.max_inflight, handle.max_queue_s, answer, waited_s)
                if refused is None:
                    if gate.clock() - gate.refused_at > REFUSING_FOR_S:
                        gate.refusing = False  # room, and no refusal for a while: the next go to the gate itself
                    return None
        if refused is None:
            return None  # no model ready: the routes say so
        # named only when the server knows no other: a request may be for a model not ready (or for none), which
        # must not be told another's limits, nor be counted as another's refusal
        only = repository.only_model
        detail, at_least = refused
        shed = Shed(only, SHED_DETAIL if only is None else detail, at_least, entries[0].name)
        # every version at its in-flight limit: the same refusal, whatever the time or the head's wait, until a call
        # enters or leaves the gate or what is served changes (the refusal cell's flood: a tenth of a refusal's work)
        self._shed_full = (gate.moves, repository.generation, shed) if all_full else None
        return shed

    def tightest_queue_s(self) -> float | None:
        """The smallest queue-time budget of the ready versions of the models with calls in flight, each version's
        own (``max_queue_ms``, model.toml) or else the server's; the server's with none in flight; ``None`` where
        none has a budget. The HTTP protocol's pacing turns its order by it (``http/pacing.py``). Only models with
        calls in flight: pacing cannot tell one model's heads from another's, and an idle model's tight budget
        would turn the order early for the heads of the one that has the traffic."""
        default = self.gate.max_queue_s
        inflight = self.gate.inflight
        tightest: float | None = None
        for entry in self.repository.ready_entries():
            if not inflight.get(entry.name):
                continue
            for handle in entry.serving.values():
                budget = handle.max_queue_s if handle.max_queue_s is not None else default
                if budget is not None and (tightest is None or budget < tightest):
                    tightest = budget
        return default if tightest is None else tightest

    # inference -------------------------------------------------------------------------------------------
    def call(self, name: str, ctx: CallContext = LOCAL, version: str | None = None, label: str | None = None) -> Call:
        """An admitted call into ``name``; use it as a context manager (``with plane.call(...) as call``)."""
        return self.admit(name, ctx, version, label).call()

    def admit(
        self, name: str, ctx: CallContext = LOCAL, version: str | None = None, label: str | None = None
    ) -> Admission:
        """A slot in ``name``'s gate, taken on what the request's head says: 404 for an unknown model or version,
        503 for one not ready, 503 with ``Retry-After`` over its in-flight limit or queue-time budget. Use it as
        a context manager around reading the body, and ``admission.call()`` inside it."""
        try:
            handle = self.repository.resolve(name, version, label, ctx.principal)
            batcher = handle.batcher
            # a job's chunk (ctx.timed False) is batch work: bounded by its chunking, never by queue time; calls
            # admitted into this version whose bodies are still being read will be queued ahead of this one
            answer = batcher.expected_answer(batcher.arriving) if batcher is not None and ctx.timed else 0.0
            # the wait before this call reached us counts too: under a flood, a head may wait its turn in the
            # event loop longer than the queue itself would take
            waited = time.monotonic() - ctx.arrived if ctx.arrived is not None and ctx.timed else 0.0
            self.gate.enter(name, handle.max_inflight, handle.max_queue_s, answer, waited, ctx.caller)
        except ModelAPIError as exc:
            caller = ctx.caller
            if caller is not None and ctx.gone is not None and isinstance(exc, Overloaded) and ctx.gone():
                # its connection closed already (its close was reported): the place just kept would stay counted
                # until its time
                self.gate.release(caller)
            if self.events.active:
                reason = "overloaded" if isinstance(exc, Overloaded) else _reason(exc.status)
                self.events.request_rejected(RequestRejected(name, ctx.protocol, reason, exc.status))
            raise
        if batcher is not None:
            batcher.arriving += 1
        return Admission(self, handle, ctx, version, label, waited)

    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        ctx: CallContext = LOCAL,
        version: str | None = None,
        label: str | None = None,
    ) -> InferenceResponse:
        with self.call(name, ctx, version, label) as call:
            return await call.infer(request)


def _output_sources(signature: Signature, wanted: list[str], name: str) -> dict[str, str]:
    """The model output behind each MLServer output name asked for (``matching.output_aliases``); 400 for a name
    that is neither an output nor such an alias."""
    unknown = [o for o in wanted if signature.output(o) is None]
    if not unknown:
        return {}
    aliases = output_aliases(signature)
    unknown = [o for o in unknown if o not in aliases]
    if unknown:
        raise InvalidInput(
            f"outputs: unknown {', '.join(repr(o) for o in unknown)}; "
            f"model '{name}' has outputs: {', '.join(signature.output_names)}"
        )
    return {o: aliases[o] for o in wanted if signature.output(o) is None}


def _reason(status: int) -> str:
    return {404: "not_found", 503: "unavailable", 403: "forbidden", 401: "unauthenticated"}.get(status, "error")


#: a shed refusal's detail when it may not name the model (``DataPlane.shed``, ``http/shedding.py``)
SHED_DETAIL = "every model this server serves is over its in-flight or queue-time limit; retry shortly"


@dataclass(slots=True)  # not frozen: a frozen one's __init__ sets each field through object.__setattr__
class Shed:
    """``DataPlane.shed``'s refusal: the model refused (the only one the server knows; ``None`` when it knows
    several), why, the least ``Retry-After`` and the model whose schedule of returns books it. Not to be changed:
    one at every in-flight limit is kept and given to every refusal until a call moves (``DataPlane._shed_full``)."""

    model: str | None
    detail: str
    at_least: int
    schedule: str


class Admission:
    """A call admitted into a model's gate whose body is still to be read; ``call()`` turns it into the ``Call``.
    Leaving its ``with`` block without one gives the slot back (a body that failed to arrive, say)."""

    __slots__ = ("_arrived", "_called", "_released", "ctx", "handle", "label", "plane", "version", "waited")

    def __init__(
        self,
        plane: DataPlane,
        handle: VersionHandle,
        ctx: CallContext,
        version: str | None,
        label: str | None,
        waited: float = 0.0,
    ) -> None:
        self.plane = plane
        self.handle = handle
        self.ctx = ctx
        self.version = version
        self.label = label
        self.waited = waited  # seconds from the head's arrival to the admission (CallContext.arrived)
        self._called = False  # a flag, not the Call: the Call refers to this, and a cycle waits for the collector
        self._released = False
        self._arrived = False

    def _arrive(self) -> None:
        """The body is in (or will never be): no longer counted among the version's arriving calls."""
        if not self._arrived:
            self._arrived = True
            batcher = self.handle.batcher
            if batcher is not None:
                batcher.arriving -= 1

    def call(self) -> Call:
        """The call, holding the version admitted on the head, or (if that one was swapped out meanwhile) the
        version the same reference resolves to now."""
        self._arrive()
        handle = self.handle
        if handle.state is not _READY:
            try:
                handle = self.plane.repository.resolve(handle.name, self.version, self.label, self.ctx.principal)
            except ModelAPIError:
                self.release()
                raise
        handle.acquire()
        self._called = True
        return Call(self.plane, handle, self.ctx, self)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.plane.gate.leave(self.handle.name)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._called:
            self._arrive()
            self.release()
        # else the call gives the slot back when it closes (its own with block has ended by now)


class Call:
    """One admitted call: holds its model version until it is closed."""

    __slots__ = ("_closed", "admission", "ctx", "handle", "plane", "rows", "started", "status", "timing")

    def __init__(self, plane: DataPlane, handle: VersionHandle, ctx: CallContext, admission: Admission) -> None:
        self.plane = plane
        self.handle = handle
        self.ctx = ctx
        self.admission = admission
        self.started = time.monotonic()
        self.status = 200
        self.rows = 0
        self.timing = Timing()
        self._closed = False
        if plane.events.active:
            plane.events.request_started(RequestStarted(handle.name, handle.version, ctx.protocol, ctx.request_id))
        if tracing.ON:
            tracing.annotate(handle.name, handle.version, ctx.protocol)

    @property
    def model(self) -> Model:
        return self.handle.model

    @property
    def signature(self) -> Signature:
        return self.handle.model.signature

    @property
    def version(self) -> str:
        return self.handle.version

    def __enter__(self) -> Call:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            if isinstance(exc, ModelAPIError):
                self.status = exc.status
                # the version that refused it, for the answer to name (http/errors.py); not a key's row quota's
                # 429, checked here once the rows are known: the key's limit refused it, not the version
                if exc.version is None and not isinstance(exc, TooManyRequests):
                    exc.version = self.handle.version
            else:
                self.status = 499 if kind is asyncio.CancelledError else 500
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        handle = self.handle
        self.admission.release()
        handle.release()
        events = self.plane.events
        if events.active:
            t = self.timing
            duration = time.monotonic() - self.started
            events.request_finished(
                RequestFinished(
                    handle.name,
                    handle.version,
                    self.ctx.protocol,
                    self.status,
                    self.rows,
                    t.queue_s,
                    t.compute_s,
                    duration,
                    self.ctx.request_id,
                )
            )

    def _timeout(self) -> tuple[float | None, float | None]:
        """Seconds left for this call, and the inference timeout that bounds it (``None``: the request's
        deadline does); the message saying so is made only when it fires (``_timeout_reason``)."""
        plane, handle, ctx = self.plane, self.handle, self.ctx
        limit = handle.inference_timeout_s if handle.inference_timeout_s is not None else plane.inference_timeout_s
        seconds = limit if ctx.timed else None
        if ctx.deadline is not None:
            left = ctx.deadline - time.monotonic()
            if seconds is None or left < seconds:
                return max(left, 0.0), None
        return seconds, limit

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        handle = self.handle
        model = handle.model
        name = handle.name
        outputs_wanted = request.outputs
        sources = _output_sources(model.signature, outputs_wanted, name) if outputs_wanted is not None else {}
        max_rows = handle.max_rows if handle.max_rows is not None else self.plane.max_rows
        inputs = model.signature.validate(request.inputs, max_rows=max_rows)
        rows = next(iter(inputs.values())).shape[0]
        self.rows = rows
        if self.ctx.charge_rows is not None:  # the key's row quotas (429 over them), before the model runs
            await self.ctx.charge_rows(rows)
        seconds, bound = self._timeout()
        queue_s = handle.max_queue_s if handle.max_queue_s is not None else self.plane.gate.max_queue_s
        # the wait before admission counts (a head the event loop got to late), the body's upload does not: a
        # large or slow body would otherwise run out of queue time on an idle model, on every retry
        timed = queue_s is not None and self.ctx.timed
        queue_deadline = self.started - self.admission.waited + queue_s if timed and queue_s is not None else None
        batcher = handle.batcher
        try:
            ran = None
            # the only request in progress: none could join its batch, so an idle cheap model runs it now, without
            # waiting a turn of the event loop for others (an inline run cannot be interrupted by the timeout)
            alone = self.ctx.in_progress
            if (
                batcher is not None
                and alone is not None
                and len(alone) <= 1
                and (seconds is None or seconds > 0)
                and (queue_deadline is None or queue_deadline >= time.monotonic())  # else dropped, as queued
            ):
                ran = batcher.run_now(inputs, rows, self.timing)
            if ran is not None:
                outputs = ran
            else:
                key = None  # what a batch shares, only needed for one (a run inline has none to join)
                if batcher is not None:
                    open_shapes = tuple(inputs[n].shape[1:] for n in handle.open_shaped)
                    key = batch_key(handle.version, outputs_wanted, request.parameters, open_shapes)
                async with asyncio.timeout(seconds):
                    ctx = self.ctx
                    run = handle.run(inputs, rows, key, self.timing, queue_deadline, ctx.gone)
                    gone = ctx.disconnected  # (a front end that gives ``ctx.gone`` gives none: the queue asks that)
                    if gone is not None and batcher is not None and batcher.busy:
                        outputs = await _unless_gone(run, gone)  # it will wait: watch for the client leaving
                    else:
                        outputs = await run
        except QueueExpired:
            events = self.plane.events
            if events.active:
                events.request_rejected(RequestRejected(name, self.ctx.protocol, "queue_time", 503))
            # its Retry-After a place in the schedule of returns, as a refusal's: a client dropped is one more to
            # come back, and told 1 s, as it was, it came back at once to be dropped again (docs/overload.md)
            ctx = self.ctx
            caller = ctx.caller if ctx.gone is None or not ctx.gone() else None
            raise QueueTimeout(
                f"model '{name}' did not reach this request within the queue-time limit of "
                f"{(queue_s or 0) * 1000:g} ms (max_queue_ms); retry shortly",
                headers=self.plane.gate.retry_after(name, OVERLOADED_RETRY_AFTER_S, caller),
            ) from None
        except (ClientGone, CallerGone) as exc:
            events = self.plane.events
            if events.active:
                events.request_rejected(RequestRejected(name, self.ctx.protocol, "disconnected", 499))
            if isinstance(exc, CallerGone):
                raise ClientGone("the client disconnected while its request waited") from None
            raise
        except TimeoutError:
            # still queued, the rows never run; already running, that batch finishes and this answer is dropped
            events = self.plane.events
            if events.active:
                events.request_rejected(RequestRejected(name, self.ctx.protocol, "timeout", 504))
            why = (
                "the request's deadline"
                if bound is None
                else f"the inference timeout of {bound:g} s (inference_timeout_s)"
            )
            raise InferenceTimeout(f"model '{name}' took longer than {why}") from None
        except (BadRequest, InferenceError, asyncio.CancelledError):
            raise
        except BatcherClosed:
            raise ModelNotReady(f"model '{name}' version {handle.version} is unloading; retry") from None
        except Exception as exc:
            log.error("model %r version %s failed on a request of %d rows", name, handle.version, rows, exc_info=exc)
            raise InferenceError(f"model '{name}' failed to predict") from exc
        events = self.plane.events
        if events.sampling:  # the prediction log (monitor/): decided before anything is copied
            rate = events.sample_rate(name)
            if rate > 0.0:
                self._sample(events, rate, inputs, outputs, rows)
        if outputs_wanted is not None:
            outputs = {k: outputs[sources.get(k, k)] for k in outputs_wanted}
        return InferenceResponse(name, handle.version, outputs, id=request.id)

    def _sample(
        self,
        events: Events,
        rate: float,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        rows: int,
    ) -> None:
        """Hand the sampled rows of this answer to the subscribers: each row with probability ``rate``; all rows
        are passed as they are (nothing mutates an answered request's arrays), a share is copied out."""
        if rate < 1.0:
            if rows == 1:
                if random.random() >= rate:  # noqa: S311 (sampling, not secrets)
                    return
            else:
                picked = np.flatnonzero(np.random.random(rows) < rate)
                if picked.size == 0:
                    return
                if picked.size < rows:
                    inputs = {k: v[picked] for k, v in inputs.items()}
                    outputs = {k: v[picked] for k, v in outputs.items()}
        principal = self.ctx.principal
        handle = self.handle
        events.predictions_served(
            PredictionsServed(
                handle.name,
                handle.version,
                self.ctx.protocol,
                self.ctx.request_id,
                None if principal is None else principal.name,
                time.time(),
                time.monotonic() - self.started,
                inputs,
                outputs,
            )
        )


async def _unless_gone(run: Coroutine[Any, Any, dict[str, np.ndarray]], gone: Callable[[], Awaitable[None]]) -> Any:
    """``run``'s result, unless ``gone()`` completes first (the client went away): then ``run`` is cancelled, so
    its rows, still queued, are skipped when the next batch forms, and ``ClientGone`` is raised."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await gone()
        left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await run
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientGone("the client disconnected while its request waited") from None
        raise
    finally:
        watcher.cancel()
