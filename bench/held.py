"""A model that holds every batch for a second: for the overload cell's refusal cost (``bench/overload.py``).

Served as ``bench.held:Held`` with ``--max-inflight 1``: the one request in flight holds the model, so every
other request is refused, on its head once the gate has refused one (``http/shedding.py``). It takes the same
requests as the bench's logistic regression (its name, its input tensor), so a refusal here reads and drops the
same bytes as a refusal there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

from .workload import N_FEATURES

HOLD_S = 1.0


class Held(Model):
    platform = "python"
    signature = Signature(
        inputs=(TensorSpec("input", "FP64", (-1, N_FEATURES)),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
    )

    def __init__(self) -> None:
        self.name = "logreg"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        time.sleep(HOLD_S)
        return {"label": np.zeros(len(inputs["input"]), dtype=np.int64)}
