"""The real server batches concurrent requests; ``--batch NAME=...`` and ``MODELAPI_BATCHING=false`` take effect."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from modelapi.models.base import Model
from modelapi.signature import Signature, TensorSpec

from .server import serve


class SlowDoubler(Model):
    """y = 2x, 20 ms per batch; ``batch_rows``: the rows of the batch each row ran in."""

    signature = Signature.from_features(
        {"x": "FP64"}, outputs=[TensorSpec("y", "FP64"), TensorSpec("batch_rows", "INT64")]
    )

    def __init__(self) -> None:
        self.name = "slow"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        time.sleep(0.02)
        x = inputs["x"]
        return {"y": 2 * x, "batch_rows": np.full(len(x), len(x))}


def _hammer(url: str) -> list[dict[str, float]]:
    def one(i: int) -> dict[str, float]:
        r = httpx.post(f"{url}/predict", json={"x": float(i)}, timeout=30)
        assert r.status_code == 200, r.text
        body: dict[str, float] = r.json()
        assert body["prediction"] == 2.0 * i
        return body

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(48)))


def test_the_server_batches_concurrent_requests_within_the_per_model_cap() -> None:
    # the queue-time budget well above the default's 2 s: this test is about batches, and a machine that stalls
    # while the first batches drain (the estimate's time per row taken from them) must not turn its requests away
    args = ("--name", "slow", "--batch", "slow=6", "--max-queue-ms", "60000")
    with serve("e2e.test_batching:SlowDoubler", *args) as server:
        rows = [body["batch_rows"] for body in _hammer(server.url)]
    assert max(rows) > 1 and max(rows) <= 6


def test_no_batching_runs_every_request_alone() -> None:
    env = {"MODELAPI_BATCHING": "false", "MODELAPI_MAX_QUEUE_MS": "60000"}  # as above
    with serve("e2e.test_batching:SlowDoubler", env=env) as server:
        rows = [body["batch_rows"] for body in _hammer(server.url)]
    assert set(rows) == {1}
