"""XGBoost models saved in its native JSON or UBJSON format (``Booster.save_model`` or the scikit-learn wrappers).

The signature comes from the file: one input per feature when the model recorded feature names (``INT64`` for
integer features, ``FP64`` otherwise; null/NaN is passed through as XGBoost's "missing"), else one ``input``
matrix of ``[-1, num_features]``. The objective decides the outputs: classifiers (``binary:logistic``,
``multi:softprob``, ``multi:softmax``) answer ``label`` and ``probabilities`` over the class indices, every
other objective answers ``prediction``. Predictions are ``Booster.inplace_predict``'s, as the scikit-learn
wrappers compute them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ModelLoadError
from ..signature import Signature, TensorSpec
from .base import Model

INSTALL = "XGBoost models need xgboost: pip install 'modelapi[xgboost]'"
SUFFIXES = (".json", ".ubj")
CLASSIFIER_OBJECTIVES = ("binary:logistic", "multi:softprob", "multi:softmax")
_INT_TYPES = ("int", "i")


class XGBoostModel(Model):
    platform: ClassVar[str] = "xgboost"

    def __init__(self, booster: Any, path: Path) -> None:
        self.booster = booster
        config = json.loads(booster.save_config())["learner"]
        self.objective: str = config["objective"]["name"]
        params = config["learner_model_param"]
        n_classes = int(params.get("num_class", "0"))
        n_targets = int(params.get("num_target", "1"))
        self._names: list[str] | None = booster.feature_names
        types: list[str] = booster.feature_types or ["float"] * booster.num_features()
        if self._names:
            inputs = tuple(_feature_spec(n, t) for n, t in zip(self._names, types, strict=True))
        else:
            inputs = (TensorSpec("input", "FP64", (-1, booster.num_features()), allow_nonfinite=True),)
        self._classifier = self.objective in CLASSIFIER_OBJECTIVES
        if self._classifier:
            self.classes = np.arange(max(n_classes, 2), dtype=np.int64)
            labels = tuple(int(c) for c in self.classes)
            outputs: tuple[TensorSpec, ...] = (
                TensorSpec("label", "INT64", (-1,)),
                TensorSpec("probabilities", "FP32", (-1, len(labels)), labels=labels),
            )
        else:
            shape = (-1,) if n_targets == 1 else (-1, n_targets)
            outputs = (TensorSpec("prediction", "FP32", shape),)
        self.signature = Signature(inputs, outputs)
        estimator = _sklearn_type(booster)
        self.info = {
            "format": f"xgboost {path.suffix.lstrip('.').lower()}",
            "source": str(path),
            "objective": self.objective,
            **({"estimator": estimator} if estimator else {}),
            "trust": "not needed (native model file)",
        }

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._names:
            X = np.column_stack([np.asarray(inputs[n], dtype=np.float64) for n in self._names])
        else:
            X = np.asarray(inputs["input"], dtype=np.float64)
        raw = np.asarray(self.booster.inplace_predict(X, validate_features=False))
        if not self._classifier:
            return {"prediction": raw}
        if self.objective == "multi:softmax":  # class indices only; no probabilities to report
            index = raw.astype(np.int64)
            proba = np.eye(len(self.classes), dtype=np.float32)[index]
        elif raw.ndim == 1:  # binary:logistic: P(class 1)
            proba = np.column_stack([1 - raw, raw]).astype(np.float32)
            index = (raw > 0.5).astype(np.int64)
        else:
            proba = raw
            index = np.argmax(raw, axis=1)
        return {"label": self.classes[index], "probabilities": proba}


def _feature_spec(name: str, kind: str) -> TensorSpec:
    if kind in _INT_TYPES:
        return TensorSpec(name, "INT64", (-1,))
    description = "category code" if kind == "c" else None
    return TensorSpec(name, "FP64", (-1,), allow_nonfinite=True, description=description)


def _sklearn_type(booster: Any) -> str | None:
    raw = (booster.attributes() or {}).get("scikit_learn")
    try:
        kind = json.loads(raw).get("_estimator_type") if raw else None
    except ValueError:
        return None
    return f"scikit-learn wrapper ({kind})" if isinstance(kind, str) else None


def load_xgboost(path: Path) -> XGBoostModel:
    try:
        import xgboost
    except ImportError:
        raise ModelLoadError(INSTALL) from None
    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot read {path} as an XGBoost model (JSON or UBJSON): {first}") from exc
    return XGBoostModel(booster, path)
