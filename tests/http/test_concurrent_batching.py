"""Concurrent HTTP requests through the whole app (middleware, routes, codecs) are batched and answered right."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import httpx
import numpy as np

from modelapi.dataplane import DataPlane
from modelapi.http.app import create_app
from modelapi.models.base import Model
from modelapi.settings import Settings
from modelapi.signature import Signature, TensorSpec


class Doubler(Model):
    """y = 2x; ``batch_rows`` tells each row how many rows its batch had. Holds a call with x = -1 until released
    (the warm-up on the example, x = 0, goes through)."""

    signature = Signature.from_features(
        {"x": "FP64"}, outputs=[TensorSpec("y", "FP64"), TensorSpec("batch_rows", "INT64")]
    )

    def __init__(self) -> None:
        self.name = "doubler"
        self.calls: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(len(x))
        if (x == -1).any():
            self.started.set()
            assert self.release.wait(10)
        return {"y": 2 * x, "batch_rows": np.full(len(x), len(x))}


async def _concurrent(settings: Settings) -> tuple[Doubler, list[httpx.Response]]:
    model = Doubler()
    app = create_app([model], settings)
    await app.state.dataplane.start()  # ASGITransport runs no lifespan
    model.calls.clear()  # the warm-up
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        first = asyncio.ensure_future(client.post("/predict", json={"x": -1.0}))
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        rest = [
            asyncio.ensure_future(client.post("/predict", json={"x": float(i)}))
            if i % 3
            else asyncio.ensure_future(client.post("/v2/models/doubler/infer", json=_v2(i)))
            for i in range(30)
        ]
        await _until_waiting(app.state.dataplane, 30)  # every request has reached the model's queue
        model.release.set()
        responses = await asyncio.gather(first, *rest)
    await app.state.dataplane.close()
    return model, responses[1:]


async def _until_waiting(dp: DataPlane, n: int) -> None:
    batcher = dp.resolve("doubler").batcher
    if batcher is None:  # batching off: the requests wait in the threadpool instead
        await asyncio.sleep(0.2)
        return
    for _ in range(5000):
        if batcher.waiting == n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{batcher.waiting} requests wait, not {n}")


def _v2(i: int) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [float(i), float(i) + 0.5]}]}


def test_concurrent_http_requests_share_batches_and_get_their_own_answers() -> None:
    model, responses = asyncio.run(_concurrent(Settings(batch_max_size=16)))
    assert model.calls[0] == 1 and len(model.calls) < 30 and all(n <= 16 for n in model.calls)
    assert sum(model.calls) == 1 + sum(2 if i % 3 == 0 else 1 for i in range(30))
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        body = r.json()
        if i % 3:
            assert body["prediction"] == 2.0 * i and body["batch_rows"] > 1
        else:
            y = next(o for o in body["outputs"] if o["name"] == "y")
            assert y["data"] == [2.0 * i, 2.0 * i + 1]


def test_with_batching_off_each_request_runs_alone() -> None:
    model, responses = asyncio.run(_concurrent(Settings(batching=False)))
    assert sorted(model.calls) == sorted([1] + [2 if i % 3 == 0 else 1 for i in range(30)])
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        if i % 3:
            assert r.json() == {"prediction": 2.0 * i, "batch_rows": 1}
