"""A model whose inputs the drift tests move, and rows to send it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

if TYPE_CHECKING:
    from modelapi.monitor.store import LogStore

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


def write_log(
    state_dir: object,
    *,
    hours: int = 6,
    per_hour: int = 400,
    now: float | None = None,
    sensitive: tuple[str, ...] = (),
    store: LogStore | None = None,
) -> float:
    """A prediction log of model ``shift`` version 1 in ``state_dir``'s Parquet store (or in ``store``): ``hours``
    hours of rows ending now, x2 moving by two standard deviations in the second half (``sensitive`` inputs left
    out, as the server leaves them). Returns the first row's time."""
    import time
    from pathlib import Path

    from modelapi.events import PredictionsServed
    from modelapi.monitor.parquet import ParquetStore
    from modelapi.monitor.records import DAY_S, Pending

    now = time.time() if now is None else now
    store = ParquetStore(Path(str(state_dir)) / "predictions") if store is None else store
    rng = np.random.default_rng(3)
    start = now - hours * 3600
    model = Shift()
    for h in range(hours):
        t = start + h * 3600 + 1
        rows = records(rng, per_hour, shift={"x2": 2.0} if h >= hours // 2 else None)
        inputs = {f: np.array([r[f] for r in rows]) for f in (*FEATURES, "city")}
        outputs = model.predict(inputs)
        pending = Pending("shift", "1", int(t // DAY_S))
        pending.add(PredictionsServed("shift", "1", "records", None, None, t, 0.001, inputs, outputs), sensitive)
        store.write("shift", "1", pending.day, pending.table())
    return start
