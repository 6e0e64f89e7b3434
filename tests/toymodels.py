"""Small models defined in code, for tests that need a model but not a loader.

Importable by the real server as ``toymodels:Echo`` etc. when ``tests/`` is on PYTHONPATH.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_LABELS = ("setosa", "versicolor", "virginica")


class IrisClassifier(Model):
    """A tabular classifier with named features, string labels and probabilities."""

    platform = "python"
    signature = Signature(
        inputs=tuple(
            TensorSpec(f, "FP64", (-1,), example=v) for f, v in zip(IRIS_FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)
        ),
        outputs=(
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("probabilities", "FP64", (-1, 3), labels=IRIS_LABELS),
        ),
    )

    def __init__(self) -> None:
        self.name = "iris"

    def load(self) -> None:
        data = load_iris()
        y = np.array(IRIS_LABELS, dtype=object)[data.target]
        self.estimator = LogisticRegression(max_iter=1000).fit(data.data, y)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = np.column_stack([inputs[f] for f in IRIS_FEATURES])
        return {"label": self.estimator.predict(x), "probabilities": self.estimator.predict_proba(x)}


ECHO_TYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class Echo(Model):
    """One input per datatype, each echoed back unchanged as ``<name>_out``; ``matrix`` is [-1, 2, 3]."""

    signature = Signature(
        inputs=(
            *(TensorSpec(t.lower(), t, (-1,), allow_nonfinite=True) for t in ECHO_TYPES),
            TensorSpec("matrix", "FP32", (-1, 2, 3)),
        ),
        outputs=(
            *(TensorSpec(f"{t.lower()}_out", t, (-1,)) for t in ECHO_TYPES),
            TensorSpec("matrix_out", "FP32", (-1, 2, 3)),
        ),
    )

    def __init__(self) -> None:
        self.name = "echo"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {f"{k}_out": v for k, v in inputs.items()}


class Regressor(Model):
    """y = 2a - b; answers NaN when a == 999 (to test non-finite outputs) and fails when a == -999."""

    signature = Signature.from_features({"a": "FP64", "b": "FP64"}, outputs=[TensorSpec("prediction", "FP64")])

    def __init__(self) -> None:
        self.name = "regressor"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        a, b = inputs["a"], inputs["b"]
        if (a == -999).any():
            raise RuntimeError("secret internal detail /srv/model/weights.bin")
        y = 2 * a - b
        return {"prediction": np.where(a == 999, np.nan, y)}


class Sleepy(Model):
    """Sleeps ``seconds`` (the largest in the batch), then answers them with the serving process's ``pid``.

    For tests of worker processes and graceful shutdown: slow requests in flight, and which worker served them.
    """

    signature = Signature.from_features(
        {"seconds": "FP64"}, outputs=[TensorSpec("seconds", "FP64", (-1,)), TensorSpec("pid", "INT64", (-1,))]
    )

    def __init__(self) -> None:
        self.name = "sleepy"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        import os
        import time

        seconds = inputs["seconds"]
        time.sleep(float(np.max(seconds, initial=0.0)))
        return {"seconds": seconds, "pid": np.full(len(seconds), os.getpid(), dtype=np.int64)}


class GatedLoad(Sleepy):
    """``Sleepy`` whose load waits until the file named by ``TOY_LOAD_GATE`` exists (at most 60 s): for tests of
    what the server answers while its models load."""

    def load(self) -> None:
        import os
        import time
        from pathlib import Path

        gate = Path(os.environ["TOY_LOAD_GATE"])
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


class HalfPlusThree(Model):
    """TensorFlow Serving's example model (saved_model_half_plus_three): ``y = x / 2 + 3``."""

    signature = Signature.from_features({"x": "FP32"}, outputs=[TensorSpec("y", "FP32")])

    def __init__(self) -> None:
        self.name = "half_plus_three"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"y": inputs["x"] / 2 + 3}


SUBSCRIBER_PLANS = ("basic", "pro", "team")


class Subscriber(Model):
    """A classifier over a number, a category (with its known values) and a boolean: renews, yes or no."""

    platform = "python"
    signature = Signature(
        inputs=(
            TensorSpec("age", "FP64", (-1,), example=42.0),
            TensorSpec("plan", "BYTES", (-1,), example="pro", categories=SUBSCRIBER_PLANS),
            TensorSpec("active", "BOOL", (-1,), example=True),
        ),
        outputs=(
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("probabilities", "FP64", (-1, 2), labels=("no", "yes")),
        ),
    )

    def __init__(self) -> None:
        self.name = "subscriber"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        plan = np.array([SUBSCRIBER_PLANS.index(p) if p in SUBSCRIBER_PLANS else 0 for p in inputs["plan"]])
        score = 0.02 * (inputs["age"] - 40) + 0.8 * plan + 1.5 * inputs["active"].astype(float) - 1.0
        yes = 1 / (1 + np.exp(-score))
        label = np.where(yes >= 0.5, "yes", "no").astype(object)
        return {"label": label, "probabilities": np.column_stack([1 - yes, yes])}
