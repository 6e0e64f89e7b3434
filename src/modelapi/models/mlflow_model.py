"""MLflow model directories (an ``MLmodel`` file beside the artefacts).

Native flavours load with modelapi's own loaders, which are faster and need no MLflow at run time: ``onnx``,
``xgboost``, ``lightgbm`` (a Booster's text file), ``sklearn`` (skops files as trusted as any ``.skops``; pickles
only when trusted). Anything else runs through ``mlflow.pyfunc``, which imports and unpickles the model's code,
so it loads only with ``--trust-pickle`` or a ``--sha256`` pin of its pickle. MLflow's recorded signature
validates requests and its input example fills the API docs; the native loader's outputs (``label``,
``probabilities``...) are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelLoadError, UntrustedModel
from ..signature import Signature, TensorSpec
from .base import Model
from .mlflow_signature import MLmodel, mlflow_signature, read_mlmodel, with_examples
from .trust import Trust

INSTALL_PYFUNC = "this MLflow model runs through mlflow.pyfunc, which needs mlflow: pip install 'modelapi[mlflow]'"


class MlflowModel(Model):
    """A native or pyfunc model behind the MLflow model's own signature."""

    platform: ClassVar[str] = "mlflow"

    def __init__(
        self,
        inner: Model,
        signature: Signature | None,
        info: dict[str, Any],
        *,
        all_outputs: bool,
        booster: bool = False,
    ) -> None:
        self.inner = inner
        inputs = signature.inputs if signature is not None else inner.signature.inputs
        self.signature = Signature(inputs, inner.signature.outputs)
        self._adapt = _adapter(inputs, inner.signature.inputs, info["source"])
        names = self.signature.output_names
        #: the outputs ``POST /invocations`` answers, as ``mlflow.pyfunc`` would: every output of a pyfunc (or ONNX)
        #: model; a raw Booster classifier's probabilities; otherwise (None) the prediction only
        self.invocation_outputs: list[str] | None = list(names) if all_outputs else None
        self._positive_only = False
        if booster and "probabilities" in names:
            self.invocation_outputs = ["probabilities"]
            self._positive_only = self.signature.outputs[names.index("probabilities")].shape[-1] == 2
        self.info = {**info, **{k: v for k, v in inner.info.items() if k not in info}}

    def invocation_view(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs as ``mlflow.pyfunc`` shapes them: a binary Booster answers P(class 1) alone."""
        if self._positive_only:
            return {**outputs, "probabilities": np.asarray(outputs["probabilities"])[:, 1]}
        return dict(outputs)

    def load(self) -> None:
        self.inner.load()

    def unload(self) -> None:
        self.inner.unload()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.inner.predict(self.inner.signature.validate(self._adapt(inputs)))


Adapter = Any


def _adapter(outer: tuple[TensorSpec, ...], inner: tuple[TensorSpec, ...], source: str) -> Adapter:
    """Map inputs named by MLflow's signature onto the inputs the loaded model takes."""
    outer_names, inner_names = [s.name for s in outer], [s.name for s in inner]
    if set(outer_names) == set(inner_names):
        return lambda inputs: dict(inputs)
    columns = all(not s.row_shape for s in outer)
    if columns and len(inner) == 1 and inner[0].row_shape == (len(outer),):
        return lambda inputs: {inner_names[0]: np.column_stack([inputs[n] for n in outer_names])}
    if columns and len(inner) == len(outer) and all(not s.row_shape for s in inner):
        return lambda inputs: {i: inputs[o] for o, i in zip(outer_names, inner_names, strict=True)}
    if len(outer) == 1 and len(inner) == 1:
        return lambda inputs: {inner_names[0]: inputs[outer_names[0]]}
    raise ModelLoadError(
        f"{source}: the MLflow signature's inputs ({', '.join(outer_names)}) do not fit the model's "
        f"({', '.join(inner_names)})"
    )


def load_mlflow(directory: Path, trust: Trust) -> MlflowModel:
    mlmodel = read_mlmodel(directory)
    flavors = mlmodel.flavors
    base = {"format": "mlflow", "source": str(directory), "mlflow_version": mlmodel.raw.get("mlflow_version")}
    native = _native(mlmodel, trust)
    if native is not None:
        flavor, inner = native
        info = {**base, "flavor": f"{flavor} (modelapi's own loader)"}
        model_class = str(flavors.get(flavor, {}).get("model_class", ""))
        return MlflowModel(
            inner,
            mlflow_signature(mlmodel, inner.signature.outputs),
            info,
            all_outputs=flavor == "onnx",
            booster=model_class.endswith(".Booster"),
        )
    if "python_function" not in flavors:
        raise ModelLoadError(
            f"{directory}/MLmodel has flavors {', '.join(flavors)}; modelapi serves python_function, sklearn, "
            "xgboost, lightgbm and onnx"
        )
    inner, trust_info = _pyfunc(mlmodel, trust)
    info = {**base, "flavor": "python_function (mlflow.pyfunc)", **trust_info}
    return MlflowModel(inner, None, info, all_outputs=True)


def _artefact(mlmodel: MLmodel, flavor: str, key: str) -> Path | None:
    value = mlmodel.flavors.get(flavor, {}).get(key)
    if not isinstance(value, str):
        return None
    directory = mlmodel.path.resolve()
    target = (directory / value).resolve()
    if not target.is_relative_to(directory):
        raise ModelLoadError(f"{mlmodel.path}/MLmodel: {flavor}.{key} {value!r} points outside the model directory")
    return target if target.is_file() else None


def _native(mlmodel: MLmodel, trust: Trust) -> tuple[str, Model] | None:
    flavors = mlmodel.flavors
    if (path := _artefact(mlmodel, "onnx", "data")) is not None:
        from .onnx import load_onnx

        return "onnx", load_onnx(path)
    if (path := _artefact(mlmodel, "xgboost", "data")) is not None and path.suffix in (".json", ".ubj"):
        from .xgboost_model import load_xgboost

        return "xgboost", load_xgboost(path)
    booster = flavors.get("lightgbm", {}).get("model_class") == "lightgbm.basic.Booster"
    if booster and (path := _artefact(mlmodel, "lightgbm", "data")) is not None:
        from .lightgbm_model import load_lightgbm

        return "lightgbm", load_lightgbm(path)
    if (path := _artefact(mlmodel, "sklearn", "pickled_model")) is not None:
        from .sklearn import load_pickle, load_skops

        fmt = flavors["sklearn"].get("serialization_format")
        return "sklearn", load_skops(path) if fmt == "skops" else load_pickle(path, trust)
    return None


def _pyfunc(mlmodel: MLmodel, trust: Trust) -> tuple[Model, dict[str, Any]]:
    pyfunc = mlmodel.flavors["python_function"]
    if mlmodel.inputs is None:
        raise ModelLoadError(
            f"{mlmodel.path}: this MLflow pyfunc model has no signature, so modelapi cannot tell what it takes; "
            "save it with signature=mlflow.models.infer_signature(X, y)"
        )
    pickled = _artefact(mlmodel, "python_function", "python_model") or _artefact(mlmodel, "python_function", "data")
    if pyfunc.get("code") or pickled is None:
        if not trust.trust_pickle:
            raise UntrustedModel(
                f"refusing to load {mlmodel.path}: an MLflow python_function model imports and runs its own code; "
                "if you trust it, pass --trust-pickle (environment: MODELAPI_TRUST_PICKLE=true)"
            )
        trust_info: dict[str, Any] = {"trust": "--trust-pickle"}
    else:
        with open(pickled, "rb") as fh:
            digest = trust.check_pickle_file(fh, pickled)
        trust_info = {"sha256": digest, "trust": trust.describe(digest)}
    try:
        import mlflow.pyfunc
    except ImportError:
        raise ModelLoadError(INSTALL_PYFUNC) from None
    try:
        loaded = mlflow.pyfunc.load_model(str(mlmodel.path))
    except Exception as exc:
        raise ModelLoadError(f"mlflow.pyfunc cannot load {mlmodel.path}: {type(exc).__name__}: {exc}") from exc
    outputs = mlmodel.outputs or (TensorSpec("prediction", "FP64", (-1,)),)
    signature = Signature(with_examples(mlmodel.inputs, mlmodel.examples), outputs)
    return PyfuncModel(loaded, signature, columns=not mlmodel.tensor_inputs), trust_info


class PyfuncModel(Model):
    platform: ClassVar[str] = "mlflow"

    def __init__(self, loaded: Any, signature: Signature, *, columns: bool) -> None:
        self.loaded = loaded
        self.signature = signature
        self.info = {}
        self._columns = columns

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pandas as pd

        names = self.signature.input_names
        data: Any
        if self._columns:
            data = pd.DataFrame({n: inputs[n] for n in names})
        elif len(names) == 1:
            data = inputs[names[0]]
        else:
            data = {n: inputs[n] for n in names}
        return _outputs(self.loaded.predict(data), self.signature.outputs)


def _outputs(result: Any, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    import pandas as pd

    names = [s.name for s in specs]
    if isinstance(result, pd.DataFrame):
        if all(n in result.columns for n in names):
            return {n: result[n].to_numpy() for n in names}
        result = result.to_numpy()
        if len(names) > 1 and result.ndim == 2 and result.shape[1] == len(names):
            return {n: result[:, i] for i, n in enumerate(names)}
    if isinstance(result, dict):
        return {n: np.asarray(result[n]) for n in names}
    arr = np.asarray(result.to_numpy() if isinstance(result, pd.Series) else result)
    if len(names) != 1:
        raise ValueError(f"the pyfunc model returned one array for {len(names)} outputs")
    if arr.ndim == 2 and arr.shape[1] == 1 and len(specs[0].shape) == 1:
        arr = arr[:, 0]
    return {names[0]: arr}
