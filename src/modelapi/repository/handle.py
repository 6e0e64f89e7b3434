"""VersionHandle: one version of one model, from loading to unloaded.

A handle owns the model object, its batcher and the thread its batches run on, and counts the calls that hold
it. The repository swaps handles in and out of what it serves; a handle that is swapped out keeps answering the
calls it already holds, and ``drain`` waits for them before ``stop`` unloads the model.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor, Future
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from .. import tracing
from ..batching import Batcher, BatchPolicy, Timing
from ..datatypes import DATATYPES
from ..errors import InferenceError
from ..models.base import Model
from ..signature import Signature

log = logging.getLogger("modelapi")
_T = TypeVar("_T")
#: formats whose predict costs about the same for every row, so that a run measured cheap stays cheap: their
#: small batches may run on the event loop (batching.py); a Python class or a pyfunc may not
INLINE_PLATFORMS = frozenset({"sklearn", "onnx", "xgboost", "lightgbm"})


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"
    UNLOADED = "UNLOADED"


class VersionHandle:
    """``source``: the artefact's path inside the repository (what metadata shows; never a server path);
    ``fingerprint``: what the artefact's files looked like when loading began (equal: unchanged)."""

    def __init__(
        self,
        model: Model,
        version: str,
        *,
        policy: BatchPolicy,
        source: str | None = None,
        fingerprint: Hashable = None,
        max_inflight: int | None = None,
        inference_timeout_s: float | None = None,
        max_rows: int | None = None,
        max_queue_s: float | None = None,
        on_batch: Callable[[VersionHandle, int, int, float], None] | None = None,
    ) -> None:
        self.model = model
        self.name = model.name
        self.version = version
        model.version = version
        self.policy = policy
        self.source = source
        self.fingerprint = fingerprint
        self.max_inflight = max_inflight
        self.inference_timeout_s = inference_timeout_s
        self.max_rows = max_rows
        self.max_queue_s = max_queue_s
        self.state = State.LOADING
        self.reason: str | None = None
        self.batcher: Batcher | None = None
        self.open_shaped: tuple[str, ...] = ()  # inputs whose row shape varies between requests
        self.inflight = 0
        self._thread: ModelThread | None = None
        self._idle: asyncio.Event | None = None
        self._on_batch = on_batch

    @property
    def signature(self) -> Signature:
        return self.model.signature

    def describe(self) -> dict[str, Any]:
        """The model's description for clients: files named by their path inside the repository (or their
        file name), never by a path on the server."""
        described = self.model.describe()
        info = described.get("info")
        if isinstance(info, dict):
            public: dict[str, Any] = {}
            for key, value in info.items():
                if isinstance(value, str) and os.path.isabs(value):
                    value = self.source if key == "source" and self.source else os.path.basename(value)
                public[key] = value
            if self.source and "source" not in public:
                public["source"] = self.source
            described["info"] = public
        elif self.source:
            described["info"] = {"source": self.source}
        return described

    # loading (blocking; runs on a loader thread) -----------------------------------------------------------
    def start(self) -> None:
        """``model.load()``, then the warm-up: one prediction on the signature's example row. Raises what failed."""
        self.model.load()
        inputs = self.signature.validate(example_inputs(self.signature))
        predict(self.model, inputs, 1)
        if self.policy.enabled:
            self._thread = ModelThread(f"modelapi-{self.name}-{self.version}")
            self.open_shaped = tuple(s.name for s in self.signature.inputs if -1 in s.row_shape)
            on_batch = None if self._on_batch is None else functools.partial(self._on_batch, self)
            traced = {tracing.MODEL: self.name, tracing.VERSION: self.version}
            inline = self.model.platform in INLINE_PLATFORMS
            self.batcher = Batcher(
                functools.partial(predict, self.model), self.policy, self._thread, on_batch, traced, inline
            )

    def stop(self) -> None:
        """Unload: fail whatever still waits, let a running batch finish, release the model."""
        if self.batcher is not None:
            self.batcher.close()
        if self._thread is not None:
            self._thread.shutdown(wait=False)  # a predict still running past the grace period must not hold the exit
        try:
            self.model.unload()
        except Exception:
            log.exception("model %r version %s failed to unload", self.name, self.version)

    # serving (event loop) ---------------------------------------------------------------------------------
    def acquire(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until no call holds this handle; ``False`` when ``timeout_s`` ran out first."""
        if self.inflight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        key: Hashable,
        timing: Timing,
        deadline: float | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """The model's outputs for validated ``inputs``: through the batcher (dropped unrun, ``QueueExpired``, if
        no batch took them by ``deadline``; ``CallerGone`` if ``gone()`` says the caller left when one would), or
        alone on the shared threadpool."""
        if self.batcher is not None:
            return await self.batcher.submit(inputs, rows, key, timing, deadline, gone)
        started = time.monotonic()
        if tracing.ON:  # a run of its own: a predict span of one request, its parent the request's span
            run = functools.partial(predict, self.model)
            traced = {tracing.MODEL: self.name, tracing.VERSION: self.version}
            outputs = await asyncio.to_thread(tracing.run_batch, run, [tracing.capture()[0]], traced, inputs, rows)
        else:
            outputs = await asyncio.to_thread(predict, self.model, inputs, rows)
        timing.compute_s = time.monotonic() - started  # no queue of ours: the thread pool's wait counts as compute
        if self._on_batch is not None:
            self._on_batch(self, rows, 1, timing.compute_s)  # a run of its own is a batch of one request
        return outputs


def example_inputs(signature: Signature) -> dict[str, np.ndarray]:
    """One row built from each input's example value, in the input's dtype (not yet validated)."""
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        value = spec.example_value()
        dtype = object if spec.datatype == "BYTES" else DATATYPES[spec.datatype]
        out[spec.name] = np.asarray([value], dtype=dtype)
    return out


def predict(model: Model, inputs: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The model's answer, checked; raises what the model raised (the caller logs and wraps it)."""
    raw = model.predict(inputs)  # a model may raise BadRequest for an input the signature cannot describe
    outputs: dict[str, np.ndarray] = {}
    for spec in model.signature.outputs:
        if spec.name not in raw:
            log.error("model %r returned no output %r", model.name, spec.name)
            raise InferenceError(f"model '{model.name}' returned an incomplete answer")
        arr = np.asarray(raw[spec.name])
        if arr.ndim == 0 or arr.shape[0] != rows:
            log.error("model %r output %r has shape %s for %d rows", model.name, spec.name, arr.shape, rows)
            raise InferenceError(f"model '{model.name}' returned an answer of the wrong size")
        outputs[spec.name] = arr
    return outputs


class ModelThread(Executor):
    """One daemon thread that runs a model's batches in order.

    Unlike ``ThreadPoolExecutor``, whose threads the interpreter joins at exit, a daemon thread cannot keep the
    process alive after the grace period when a predict call never returns.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self._queue.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()
