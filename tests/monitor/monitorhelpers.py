"""A model whose inputs the drift tests move, and rows to send it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

FEATURES = ("x1", "x2", "x3")
CITIES = ("paris", "lyon", "nice")


class Shift(Model):
    """Three numeric features and a city; answers ``label`` high/low (x1 + x2 > 0) and a ``score``."""

    signature = Signature(
        inputs=(
            *(TensorSpec(f, "FP64", (-1,), example=0.0) for f in FEATURES),
            TensorSpec("city", "BYTES", (-1,), example="paris"),
        ),
        outputs=(TensorSpec("label", "BYTES", (-1,)), TensorSpec("score", "FP64", (-1,))),
    )

    def __init__(self) -> None:
        self.name = "shift"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        score = inputs["x1"] + inputs["x2"]
        return {"label": np.where(score > 0, "high", "low").astype(object), "score": score}


def records(rng: np.random.Generator, n: int, *, shift: Mapping[str, float] | None = None) -> list[dict[str, object]]:
    """``n`` rows: x1..x3 standard normal (plus ``shift``), a uniform city."""
    shift = shift or {}
    columns = {f: rng.normal(0.0, 1.0, n) + shift.get(f, 0.0) for f in FEATURES}
    cities = rng.choice(CITIES, n)
    return [{**{f: float(columns[f][i]) for f in FEATURES}, "city": str(cities[i])} for i in range(n)]
