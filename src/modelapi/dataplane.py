"""The serving core: loaded models, readiness and inference. Knows nothing about HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from starlette.concurrency import run_in_threadpool

from .errors import BadRequest, InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from .inference import InferenceRequest, InferenceResponse
from .models.base import Model

log = logging.getLogger("modelapi")


class DataPlane:
    def __init__(self, models: Iterable[Model], *, max_rows: int | None = None) -> None:
        self.models: dict[str, Model] = {}
        for model in models:
            if model.name in self.models:
                raise ValueError(f"two models are named {model.name!r}; give each a distinct --name")
            self.models[model.name] = model
        self.max_rows = max_rows
        self._ready: set[str] = set()
        self.live = True

    # lifecycle -------------------------------------------------------------------------------------------
    def load_all(self) -> None:
        for model in self.models.values():
            if model.name in self._ready:
                continue
            model.load()
            self._ready.add(model.name)

    def unload_all(self) -> None:
        for name in list(self._ready):
            self._ready.discard(name)
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
        outputs = await run_in_threadpool(_predict, model, inputs, rows)
        if outputs_wanted is not None:
            outputs = {k: outputs[k] for k in outputs_wanted}
        return InferenceResponse(model.name, model.version, outputs, id=request.id)


def _predict(model: Model, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    try:
        raw = model.predict(inputs)
    except BadRequest:
        raise  # a model may reject an input the signature cannot describe (e.g. an unknown category)
    except Exception as exc:
        log.exception("model %r failed on a batch of %d rows", model.name, rows)
        raise InferenceError(f"model '{model.name}' failed to predict") from exc
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
