"""The data plane: batching policies per model, batched inference, and errors that stay per request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import pytest

from modelapi.batching import Batcher, BatchPolicy
from modelapi.dataplane import DataPlane
from modelapi.errors import InferenceError, InvalidInput, ModelNotFound
from modelapi.inference import InferenceRequest
from modelapi.models.base import Model
from modelapi.settings import Settings
from modelapi.signature import Signature, TensorSpec


class Recorder(Model):
    """y = 2a - b and a label per row; records the rows of every call. a == -1 fails, a == -2 is a client error."""

    signature = Signature(
        inputs=(TensorSpec("a"), TensorSpec("b"), TensorSpec("tag", "BYTES")),
        outputs=(TensorSpec("y"), TensorSpec("label", "BYTES"), TensorSpec("batch_rows", "INT64")),
    )

    def __init__(self, name: str = "recorder", batching: BatchPolicy | bool | None = None) -> None:
        self.name = name
        if batching is not None:
            self.batching = batching
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        a, b = inputs["a"], inputs["b"]
        self.calls.append(len(a))
        assert self.gate.wait(10)
        if (a == -1).any():
            raise RuntimeError("internal failure")
        if (a == -2).any():
            raise InvalidInput("input 'a': -2 is not a value this model takes")
        label = np.array([f"{t}:{v:g}" for t, v in zip(inputs["tag"].tolist(), a.tolist(), strict=True)], dtype=object)
        return {"y": 2 * a - b, "label": label, "batch_rows": np.full(len(a), len(a))}


def batcher(dp: DataPlane, name: str) -> Batcher:
    found = dp.resolve(name).batcher
    assert found is not None
    return found


async def until_waiting(dp: DataPlane, name: str, n: int) -> None:
    for _ in range(5000):
        if batcher(dp, name).waiting == n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{batcher(dp, name).waiting} requests wait, not {n}")


def request(a: list[float], b: list[float] | None = None, tag: str = "t", **kw: object) -> InferenceRequest:
    b = b if b is not None else [0.0] * len(a)
    inputs = {"a": np.array(a), "b": np.array(b), "tag": np.array([tag] * len(a), dtype=object)}
    return InferenceRequest(inputs, **kw)  # type: ignore[arg-type]


def loaded(*models: Recorder, **settings: object) -> DataPlane:
    """A started data plane; the warm-up's call on each model's example is forgotten."""
    dp = DataPlane.from_settings(Settings(**settings), models=models)  # type: ignore[arg-type]
    asyncio.run(dp.start())
    for model in models:
        assert model.calls == [1]  # the warm-up: one row, the signature's example
        model.calls.clear()
    return dp


def unload(dp: DataPlane) -> None:
    asyncio.run(dp.close())


# policies ------------------------------------------------------------------------------------------------
def test_batching_is_on_by_default_for_every_model() -> None:
    dp = loaded(Recorder("a"), Recorder("b"))
    assert batcher(dp, "a").policy == BatchPolicy() and batcher(dp, "b").policy == BatchPolicy()
    unload(dp)
    with pytest.raises(ModelNotFound):
        dp.resolve("a")


def test_policy_precedence() -> None:
    own = BatchPolicy(True, 8, 1.0)
    m_own, m_off, m_flag, m_plain = Recorder("own", own), Recorder("off", False), Recorder("flag", own), Recorder("p")
    dp = loaded(m_own, m_off, m_flag, m_plain, batch_max_size=64, batch_max_delay_ms=2.0, batch=["flag=4"])
    assert dp.resolve("own").policy == own  # the model's own setting over the global one
    assert not dp.resolve("off").policy.enabled
    assert dp.resolve("flag").policy == BatchPolicy(True, 4, 2.0)  # the operator's per-model flag over everything
    assert dp.resolve("p").policy == BatchPolicy(True, 64, 2.0)
    unload(dp)
    off = loaded(m_own, m_flag, batching=False, batch=["flag=4"])
    assert not off.resolve("own").policy.enabled  # global off wins over the model's own setting
    assert off.resolve("flag").policy == BatchPolicy(True, 4, 0.0)
    unload(off)


def test_a_per_model_setting_for_an_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        loaded(Recorder(), batch=["nope=on"])


# batched inference ---------------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_answered_exactly() -> None:
    model = Recorder()
    dp = loaded(model)

    async def go() -> list[object]:
        reqs = [request([float(i), float(i) + 0.5][: 1 + i % 2], tag=f"r{i}", id=f"id{i}") for i in range(20)]
        return await asyncio.gather(*(dp.infer("recorder", r) for r in reqs))

    answers = asyncio.run(go())
    assert model.calls[0] == 1 and max(model.calls) > 1 and sum(model.calls) == sum(1 + i % 2 for i in range(20))
    for i, answer in enumerate(answers):
        a = [float(i), float(i) + 0.5][: 1 + i % 2]
        assert answer.id == f"id{i}"  # type: ignore[attr-defined]
        out = answer.outputs  # type: ignore[attr-defined]
        assert out["y"].tolist() == [2 * v for v in a]
        assert out["label"].tolist() == [f"r{i}:{v:g}" for v in a]
    unload(dp)


def test_requests_for_different_outputs_or_parameters_do_not_share_a_batch() -> None:
    model = Recorder()
    dp = loaded(model)

    async def go() -> None:
        model.gate.clear()
        first = asyncio.ensure_future(dp.infer("recorder", request([1.0])))
        await asyncio.sleep(0.05)
        rest = [
            dp.infer("recorder", request([2.0], outputs=["y"])),
            dp.infer("recorder", request([3.0], parameters={"p": 1})),
            dp.infer("recorder", request([4.0], outputs=["y"])),
            dp.infer("recorder", request([5.0])),
        ]
        tasks = [asyncio.ensure_future(r) for r in rest]
        await until_waiting(dp, "recorder", 4)
        model.gate.set()
        answers = await asyncio.gather(first, *tasks)
        assert list(answers[1].outputs) == ["y"] and answers[3].outputs["y"].tolist() == [8.0]

    asyncio.run(go())
    assert sorted(model.calls[1:]) == [1, 1, 2]  # (2, 4) together; 3 and 5 each alone
    unload(dp)


def test_errors_stay_with_the_request_that_caused_them(caplog: pytest.LogCaptureFixture) -> None:
    model = Recorder()
    dp = loaded(model)

    async def go() -> list[object]:
        model.gate.clear()
        first = asyncio.ensure_future(dp.infer("recorder", request([1.0])))
        await asyncio.sleep(0.05)
        values = [2.0, -1.0, 3.0, -2.0, 4.0]
        tasks = [asyncio.ensure_future(dp.infer("recorder", request([v]))) for v in values]
        await until_waiting(dp, "recorder", len(values))
        model.gate.set()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    answers = asyncio.run(go())
    failed, client_error = answers[2], answers[4]
    assert isinstance(failed, InferenceError) and "internal failure" not in failed.detail
    assert isinstance(client_error, InvalidInput) and "-2 is not a value" in client_error.detail
    assert [a.outputs["y"].tolist() for a in (answers[1], answers[3], answers[5])] == [[4.0], [6.0], [8.0]]  # type: ignore[union-attr]
    assert "internal failure" in caplog.text  # the log keeps the detail
    unload(dp)


def test_invalid_input_is_rejected_before_it_can_join_a_batch() -> None:
    model = Recorder()
    dp = loaded(model)
    bad = request([1.0], [1.0, 2.0])
    with pytest.raises(InvalidInput, match="rows"):
        asyncio.run(dp.infer("recorder", bad))
    assert model.calls == []


def test_batching_off_runs_each_request_on_its_own() -> None:
    model = Recorder()
    dp = loaded(model, batching=False)
    assert dp.resolve("recorder").batcher is None

    async def go() -> list[object]:
        return await asyncio.gather(*(dp.infer("recorder", request([float(i)])) for i in range(8)))

    answers = asyncio.run(go())
    assert model.calls == [1] * 8
    assert [a.outputs["y"].tolist() for a in answers] == [[2.0 * i] for i in range(8)]  # type: ignore[attr-defined]
    with pytest.raises(InferenceError):
        asyncio.run(dp.infer("recorder", request([-1.0])))


def test_a_request_after_unload_finds_no_model() -> None:
    dp = loaded(Recorder())
    unload(dp)
    with pytest.raises(ModelNotFound):
        asyncio.run(dp.infer("recorder", request([1.0])))
