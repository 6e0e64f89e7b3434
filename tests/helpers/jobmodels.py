"""Models for job tests, importable by a real server as ``helpers.jobmodels:Scorer`` with tests/ on PYTHONPATH."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec


class Scorer(Model):
    """Three inputs of three datatypes; outputs of five datatypes and a labelled [-1, 3] output.

    ``a == 666`` makes the model raise. ``MODELAPI_TEST_DELAY`` seconds of sleep per predict call slow it down,
    so a test can kill a process in the middle of a job.
    """

    signature = Signature(
        inputs=(TensorSpec("a", "FP64"), TensorSpec("b", "INT64"), TensorSpec("tag", "BYTES")),
        outputs=(
            TensorSpec("score", "FP64"),
            TensorSpec("count", "INT64"),
            TensorSpec("tag_out", "BYTES"),
            TensorSpec("positive", "BOOL"),
            TensorSpec("probabilities", "FP64", (-1, 3), labels=("lo", "mid", "hi")),
        ),
    )

    def __init__(self) -> None:
        self.name = "scorer"
        self.delay = float(os.environ.get("MODELAPI_TEST_DELAY", "0"))

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self.delay:
            time.sleep(self.delay)
        a, b = inputs["a"], inputs["b"]
        if np.any(a == 666.0):
            raise RuntimeError("the scorer cannot score 666")
        logits = np.column_stack([a, b / 7.0, a - b / 3.0])
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {
            "score": a * 1.1 + b / 3.0,
            "count": b * 2 + 1,
            "tag_out": np.array([f"<{t}>" for t in inputs["tag"]], dtype=object),
            "positive": a > 0,
            "probabilities": e / e.sum(axis=1, keepdims=True),
        }


def rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` input records with awkward values: long floats, negatives, commas and quotes in strings."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 100, n)
    b = rng.integers(-1000, 1000, n)
    tags = ["plain", "with,comma", 'with "quotes"', "ünï", ""]
    return [{"a": float(a[i]), "b": int(b[i]), "tag": tags[i % len(tags)] + str(i)} for i in range(n)]


def csv_text(records: list[dict[str, object]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["a", "b", "tag"], lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "a": repr(r["a"])})
    return out.getvalue()
