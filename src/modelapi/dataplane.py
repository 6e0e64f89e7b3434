"""The serving core: loaded models, readiness and inference. Knows nothing about HTTP.

Each model gets a ``Batcher`` (``batching.py``) when it loads: validated requests are gathered into row-capped
batches and run one batch at a time on the model's own worker thread, so the event loop keeps parsing the
next requests meanwhile. A model whose policy turns batching off runs every request on its own, concurrently,
in the shared threadpool. ``docs/batching.md`` has the measurements behind these choices.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from .batching import Batcher, BatcherClosed, BatchPolicy, batch_key
from .errors import BadRequest, InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from .inference import InferenceRequest, InferenceResponse
from .models.base import Model
from .security.limits import current_limits

log = logging.getLogger("modelapi")
_T = TypeVar("_T")


class DataPlane:
    def __init__(
        self,
        models: Iterable[Model],
        *,
        max_rows: int | None = None,
        batching: BatchPolicy | None = None,
        batch_overrides: Mapping[str, BatchPolicy] | None = None,
    ) -> None:
        """``batching``: the global policy; ``batch_overrides``: the operator's per-model policies (by name)."""
        self.models: dict[str, Model] = {}
        for model in models:
            if model.name in self.models:
                raise ValueError(f"two models are named {model.name!r}; give each a distinct --name")
            self.models[model.name] = model
        unknown = sorted(set(batch_overrides or {}) - set(self.models))
        if unknown:
            names = ", ".join(self.models)
            raise ValueError(f"batching set for unknown model(s) {', '.join(unknown)}; served: {names}")
        self.max_rows = max_rows
        self.batching = batching or BatchPolicy()
        self.batch_overrides = dict(batch_overrides or {})
        self.batchers: dict[str, Batcher] = {}
        self._threads: dict[str, ModelThread] = {}
        self._open_shaped: dict[str, list[str]] = {}  # inputs whose row shape varies between requests
        self._ready: set[str] = set()
        self.live = True

    def policy(self, model: Model) -> BatchPolicy:
        """The operator's per-model setting, else global off, else the model's own ``batching``, else global."""
        override = self.batch_overrides.get(model.name)
        if override is not None:
            return override
        if not self.batching.enabled:
            return self.batching
        own = getattr(model, "batching", None)
        if isinstance(own, BatchPolicy):
            return own
        if own is False:
            return BatchPolicy(False, self.batching.max_batch_size, self.batching.max_delay_ms)
        return self.batching

    # lifecycle -------------------------------------------------------------------------------------------
    def load_all(self) -> None:
        for model in self.models.values():
            if model.name in self._ready:
                continue
            model.load()
            policy = self.policy(model)
            if policy.enabled:
                thread = ModelThread(f"modelapi-{model.name}")
                self._threads[model.name] = thread
                self._open_shaped[model.name] = [s.name for s in model.signature.inputs if -1 in s.row_shape]
                self.batchers[model.name] = Batcher(functools.partial(_predict, model), policy, thread)
            self._ready.add(model.name)

    def unload_all(self) -> None:
        for name in list(self._ready):
            self._ready.discard(name)
            batcher = self.batchers.pop(name, None)
            if batcher is not None:
                batcher.close()
            thread = self._threads.pop(name, None)
            if thread is not None:
                thread.shutdown(wait=False)  # a predict still running past the grace period must not hold the exit
            self.models[name].unload()

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(name in self._ready for name in self.models)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.get(name, version).name in self._ready

    # lookup ----------------------------------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named '{name}'; served models: {', '.join(self.models) or 'none'}")
        if version is not None and version != model.version:
            raise ModelNotFound(f"model '{name}' has no version '{version}'; served version: {model.version}")
        return model

    @property
    def default_model(self) -> Model | None:
        """The model that un-prefixed routes (``/predict``) address: the only one served, if only one."""
        return next(iter(self.models.values())) if len(self.models) == 1 else None

    # inference -------------------------------------------------------------------------------------------
    async def infer(self, name: str, request: InferenceRequest, version: str | None = None) -> InferenceResponse:
        """Over HTTP, the request's limits apply (``security/limits.py``): at most ``max_inflight`` requests per
        model in flight (503), and the inference timeout (504)."""
        limits = current_limits()
        if limits is not None and limits.gate is not None:
            return await limits.gate.run(name, self._infer(name, request, version))
        return await self._infer(name, request, version)

    async def _infer(self, name: str, request: InferenceRequest, version: str | None) -> InferenceResponse:
        model = self.get(name, version)
        if name not in self._ready:
            raise ModelNotReady(f"model '{name}' is not ready yet")
        outputs_wanted = request.outputs
        if outputs_wanted is not None:
            unknown = [o for o in outputs_wanted if model.signature.output(o) is None]
            if unknown:
                raise InvalidInput(
                    f"outputs: unknown {', '.join(repr(o) for o in unknown)}; "
                    f"model '{name}' has outputs: {', '.join(model.signature.output_names)}"
                )
        inputs = model.signature.validate(request.inputs, max_rows=self.max_rows)
        rows = next(iter(inputs.values())).shape[0]
        batcher = self.batchers.get(name)
        try:
            if batcher is None:
                outputs = await run_in_threadpool(_predict, model, inputs, rows)
            else:
                open_shapes = tuple(inputs[n].shape[1:] for n in self._open_shaped[name])
                key = batch_key(model.version, outputs_wanted, request.parameters, open_shapes)
                outputs = await batcher.submit(inputs, rows, key)
        except (BadRequest, InferenceError, asyncio.CancelledError):
            raise
        except BatcherClosed:
            raise ModelNotReady(f"model '{name}' is shutting down") from None
        except Exception as exc:
            log.error("model %r failed on a request of %d rows", model.name, rows, exc_info=exc)
            raise InferenceError(f"model '{model.name}' failed to predict") from exc
        if outputs_wanted is not None:
            outputs = {k: outputs[k] for k in outputs_wanted}
        return InferenceResponse(model.name, model.version, outputs, id=request.id)


def _predict(model: Model, inputs: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
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
