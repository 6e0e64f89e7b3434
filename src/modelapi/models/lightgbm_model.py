"""LightGBM models in its native text format (``Booster.save_model``, also ``model.booster_.save_model``).

The signature comes from the file: one ``FP64`` input per named feature (null/NaN passes through as
LightGBM's "missing"), or one ``input`` matrix ``[-1, n]`` when the model was trained on an unnamed array
(LightGBM then names its features ``Column_0``...). The objective decides the outputs: ``binary`` and
``multiclass``/``multiclassova`` answer ``label`` and ``probabilities`` over the class indices, as
``LGBMClassifier`` does for integer labels; every other objective answers ``prediction``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec
from .base import Model

INSTALL = "LightGBM models need lightgbm: pip install 'modelapi[lightgbm]'"
SUFFIXES = (".lgb", ".lgbm")
_AUTO_NAME = re.compile(r"^Column_\d+$")


class LightGBMModel(Model):
    platform: ClassVar[str] = "lightgbm"

    def __init__(self, booster: Any, path: Path) -> None:
        self.booster = booster
        dump = booster.dump_model(num_iteration=0)
        self.objective: str = str(dump.get("objective", "")).split(" ")[0]
        n_classes = int(dump.get("num_class", 1))
        self._names: list[str] = list(booster.feature_name())
        self._named = not all(_AUTO_NAME.match(n) for n in self._names)
        if self._named:
            inputs = tuple(TensorSpec(n, "FP64", (-1,), allow_nonfinite=True) for n in self._names)
        else:
            inputs = (TensorSpec("input", "FP64", (-1, len(self._names)), allow_nonfinite=True),)
        self._binary = self.objective in ("binary", "cross_entropy") and n_classes == 1
        self._classifier = self._binary or self.objective in ("multiclass", "multiclassova", "softmax")
        if self._classifier:
            self.classes = np.arange(2 if self._binary else n_classes, dtype=np.int64)
            labels = tuple(int(c) for c in self.classes)
            outputs: tuple[TensorSpec, ...] = (
                TensorSpec("label", "INT64", (-1,)),
                TensorSpec("probabilities", "FP64", (-1, len(labels)), labels=labels),
            )
        else:
            shape = (-1,) if n_classes == 1 else (-1, n_classes)
            outputs = (TensorSpec("prediction", "FP64", shape),)
        self.signature = Signature(inputs, outputs)
        self.info = {
            "format": "lightgbm text",
            "source": str(path),
            "objective": str(dump.get("objective", "")),
            "trust": "not needed (native model file)",
        }

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._named:
            X = np.column_stack([np.asarray(inputs[n], dtype=np.float64) for n in self._names])
        else:
            X = np.asarray(inputs["input"], dtype=np.float64)
        raw = np.asarray(self.booster.predict(X), dtype=np.float64)
        if not self._classifier:
            return {"prediction": raw}
        proba = np.column_stack([1.0 - raw, raw]) if self._binary else raw
        return {"label": self.classes[np.argmax(proba, axis=1)], "probabilities": proba}


def load_lightgbm(path: Path) -> LightGBMModel:
    # check the header first: LightGBM writes its own "[Fatal]" line to stderr before raising on a foreign file
    try:
        with open(path, "rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head not in (b"tree\n", b"tree\r"):
        raise ModelLoadError(
            f"{path} is not a LightGBM text model (it does not start with the 'tree' header); "
            "a .txt/.lgb file is served as a LightGBM model saved with Booster.save_model"
        )
    try:
        import lightgbm
    except ImportError:
        raise ModelLoadError(INSTALL) from None
    try:
        booster = lightgbm.Booster(model_file=str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot read {path} as a LightGBM text model: {first}") from exc
    return LightGBMModel(booster, path)
