"""The data plane: batching policies per model, batched inference, and errors that stay per request."""

from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from helpers.clock import Clock
from helpers.repo import EventLog, ModelRepo, skops_bytes, slow_joblib_bytes
from helpers.repo import rows as repo_rows
from modelapi.batching import INLINE_WINDOW, Batcher, BatchPolicy, QueueExpired
from modelapi.context import CallContext
from modelapi.dataplane import SHED_DETAIL, DataPlane, Shed
from modelapi.errors import (
    InferenceError,
    InferenceTimeout,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    QueueTimeout,
)
from modelapi.events import BatchRun, Events, RequestFinished, RequestRejected, RequestStarted
from modelapi.gate import REFUSING_FOR_S
from modelapi.inference import InferenceRequest
from modelapi.models.base import Model
from modelapi.repository.handle import VersionHandle
from modelapi.security.principal import Principal
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


class CheapRecorder(Recorder):
    """A library format's model (its batches may run inline on the event loop once known cheap)."""

    platform = "sklearn"

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[bool] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        self.threads.append(threading.current_thread() is threading.main_thread())
        return super().predict(inputs)


def test_the_only_request_in_progress_runs_at_once_and_requests_that_arrive_together_still_share_a_batch() -> None:
    """A front end that counts its requests in progress (``CallContext.in_progress``): the only one runs on an
    idle cheap model at once; with others in progress, those that reach the model in one turn share a batch."""
    model = CheapRecorder()
    dp = loaded(model)
    b = batcher(dp, "recorder")

    async def go() -> None:
        for i in range(INLINE_WINDOW):  # measured on the model's thread first
            await dp.infer("recorder", request([float(i)]))
        model.calls.clear()
        ran_between: list[bool] = []

        async def other() -> None:
            ran_between.append(True)

        alone = CallContext("v2", in_progress=[object()])
        task = asyncio.ensure_future(other())  # would run in a turn of the loop before the answer, if one was taken
        runs = b.inline_runs
        answer = await dp.infer("recorder", request([3.0], tag="a"), alone)
        assert answer.outputs["y"].tolist() == [6.0] and model.threads[-1] is True
        assert b.inline_runs == runs + 1 and ran_between == []  # on the loop, without a turn of it
        await task
        together = [object()] * 3
        answers = await asyncio.gather(
            *(dp.infer("recorder", request([float(i)]), CallContext("v2", in_progress=together)) for i in range(3))
        )
        assert model.calls[-1] == 3 and [a.outputs["y"].tolist() for a in answers] == [[0.0], [2.0], [4.0]]
        uncounted = await asyncio.gather(*(dp.infer("recorder", request([float(i)])) for i in range(3)))
        assert model.calls[-1] == 3 and len(uncounted) == 3  # a front end that does not count: the turn is taken

    asyncio.run(go())
    unload(dp)


def test_the_only_request_in_progress_past_its_queue_time_is_dropped_not_run_at_once() -> None:
    """Its rows wait for nothing, but a call whose queue time ran out before its rows were ready (a slow row
    charge, say) is refused as a queued one would be, not run."""
    model = CheapRecorder()
    dp = loaded(model, max_queue_ms=50)

    async def slow_charge(rows: int) -> None:
        await asyncio.sleep(0.1)

    async def go() -> None:
        for i in range(INLINE_WINDOW):  # measured on the model's thread first: known cheap
            await dp.infer("recorder", request([float(i)]))
        model.calls.clear()
        late = CallContext("v2", in_progress=[object()], charge_rows=slow_charge)
        with pytest.raises(QueueTimeout):
            await dp.infer("recorder", request([1.0]), late)
        assert model.calls == []

    asyncio.run(go())
    unload(dp)


@pytest.mark.parametrize("batching", [True, False])
def test_a_call_leaves_no_reference_cycle_behind(batching: bool) -> None:
    """A call's objects are freed by reference counting when it ends: one cycle per request (an admission and its
    call referring to each other, with all they held) kept the cyclic collector busy under load, a large part
    of a request's CPU (docs/benchmarks-log.md)."""
    dp = loaded(Recorder(batching=batching))

    async def go() -> int:
        await dp.infer("recorder", request([1.0]))
        gc.collect()
        await asyncio.gather(*(dp.infer("recorder", request([float(i)])) for i in range(8)))
        return gc.collect()

    assert asyncio.run(go()) == 0
    unload(dp)


def test_refused_and_expired_calls_leave_no_reference_cycle_behind() -> None:
    """Under a flood most calls end refused on the head or dropped for queue time: those too must be freed by
    reference counting. An exception set on the batcher's future was held by the future its traceback's frames
    hold, a cycle per dropped request that made the collector's pauses the server's largest."""
    model = Recorder()
    dp = loaded(model, max_queue_ms=50, max_inflight=4)
    ctx = CallContext(protocol="v2", timed=True)

    async def go() -> int:
        model.gate.clear()
        first = asyncio.ensure_future(dp.infer("recorder", request([1.0]), ctx))
        await asyncio.sleep(0.05)  # the first batch holds the model
        late = [asyncio.ensure_future(dp.infer("recorder", request([float(i)]), ctx)) for i in range(3)]
        await until_waiting(dp, "recorder", 3)
        with pytest.raises(Overloaded):  # the fifth call, over max_inflight, refused on the head
            dp.call("recorder", ctx)
        await asyncio.sleep(0.1)  # the waiting calls' queue time runs out
        gc.collect()
        model.gate.set()
        await first
        for task in late:
            with pytest.raises(QueueTimeout):
                await task
        del task, late
        return gc.collect()

    assert asyncio.run(go()) == 0
    unload(dp)


def test_a_call_that_waited_to_be_read_past_the_queue_budget_is_refused_on_its_head() -> None:
    """``CallContext.arrived``: a head the event loop got to late has used its queue time already."""
    dp = loaded(Recorder(), max_queue_ms=50)

    async def go() -> None:
        late = CallContext(protocol="v2", arrived=time.monotonic() - 0.2)
        with pytest.raises(Overloaded, match=r"after the 2\d\d ms it waited to be read"):
            dp.call("recorder", late)
        untimed = CallContext(protocol="jobs", timed=False, arrived=time.monotonic() - 0.2)
        assert (await dp.infer("recorder", request([1.0]), untimed)).outputs["y"].tolist() == [2.0]
        fresh = CallContext(protocol="v2", arrived=time.monotonic())
        assert (await dp.infer("recorder", request([2.0]), fresh)).outputs["y"].tolist() == [4.0]

    asyncio.run(go())
    unload(dp)


def test_a_body_slower_than_the_queue_budget_is_served_on_an_idle_model() -> None:
    """The wait before admission counts against the queue time, the body's upload does not: a request whose
    body takes longer than max_queue_ms to arrive is served when the model is idle, not dropped for queue time
    (on every retry)."""
    dp = loaded(Recorder(), max_queue_ms=50)

    async def go() -> None:
        ctx = CallContext(protocol="v2", arrived=time.monotonic() - 0.02)  # admitted: 20 of its 50 ms used
        with dp.admit("recorder", ctx) as admission:
            await asyncio.sleep(0.1)  # the body arrives
            with admission.call() as call:
                assert (await call.infer(request([1.0]))).outputs["y"].tolist() == [2.0]

    asyncio.run(go())
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


def test_errors_raised_while_a_call_holds_its_version_name_that_version() -> None:
    """``ModelAPIError.version``: set on what a call raises (the model's 500, a 400, a queue-time 503), so that the
    answer can name the version that refused; a refusal on the head, before a version is held, names none."""
    dp = loaded(Recorder(), max_queue_ms=50)

    async def slow_charge(rows: int) -> None:
        await asyncio.sleep(0.1)

    async def go() -> None:
        with pytest.raises(InferenceError) as failed:
            await dp.infer("recorder", request([-1.0]))
        with pytest.raises(InvalidInput) as refused:
            await dp.infer("recorder", request([1.0], [1.0, 2.0]))
        late = CallContext("v2", in_progress=[object()], charge_rows=slow_charge)
        with pytest.raises(QueueTimeout) as expired:
            await dp.infer("recorder", request([1.0]), late)
        assert [e.value.version for e in (failed, refused, expired)] == ["1"] * 3
        with pytest.raises(Overloaded) as head:
            dp.call("recorder", CallContext(protocol="v2", arrived=time.monotonic() - 0.2))
        with pytest.raises(ModelNotFound) as unknown:
            dp.call("nope")
        assert head.value.version is None and unknown.value.version is None

    asyncio.run(go())
    unload(dp)


def test_a_request_dropped_for_its_queue_time_is_told_its_place_in_the_schedule_of_returns() -> None:
    """A drop is a refusal too: its client is told to come back at the next place in the model's schedule of
    returns, kept for its connection, not "1" whatever the flood (its client came back at once, to be dropped
    again: docs/overload.md)."""
    dp = loaded(Recorder(), max_queue_ms=50)

    async def slow_charge(rows: int) -> None:
        await asyncio.sleep(0.1)

    async def go() -> None:
        gate = dp.gate
        gate.clock = lambda: 100.0  # the schedule's clock stands still: nothing served, 20 returns a second
        for i in range(40):
            gate.book("recorder", 1, client=("other", i))
        late = CallContext("v2", in_progress=[object()], charge_rows=slow_charge, caller="dropped")
        with pytest.raises(QueueTimeout) as expired:
            await dp.infer("recorder", request([1.0]), late)
        assert expired.value.headers["retry-after"] == "3" and "dropped" in gate.places
        # a client that closed its connection as its request was dropped (after the queue asked): not followed
        closed: list[bool] = []
        gone_late = CallContext("v2", in_progress=[object()], caller="left", gone=lambda: bool(closed))

        async def expired(*args: object, **kwargs: object) -> None:
            closed.append(True)
            raise QueueExpired("the queue-time limit ran out")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(VersionHandle, "run", expired)
            with pytest.raises(QueueTimeout):
                await dp.infer("recorder", request([1.0]), gone_late)
        assert "left" not in gate.places
        gate.inflight["recorder"] = gate.max_inflight  # full: the next call is refused on its head
        with pytest.raises(Overloaded):
            dp.call("recorder", CallContext("v2", caller="refused"))
        with pytest.raises(Overloaded):  # a caller whose connection closed already is not followed
            dp.call("recorder", CallContext("v2", caller="closed", gone=lambda: True))
        assert "refused" in gate.places and "closed" not in gate.places
        gate.inflight.clear()
        dp.call("recorder", CallContext("v2", caller="refused")).__exit__(None, None, None)
        assert "refused" not in gate.places  # back and admitted: no longer waiting

    asyncio.run(go())
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


# over a model repository: events, deadlines, per-version limits, keys ----------------------------------------
def repo_plane(tmp_path: Path, toml: str = "", *, slow: bool = False, **settings: object) -> tuple[DataPlane, EventLog]:
    """A data plane (not started) over a repository holding model ``m`` version 1 (slow: a joblib model that
    sleeps 0.5 s on rows whose first feature is >= 100) and model ``k``; ``toml``: m's model.toml."""
    repo = ModelRepo(tmp_path / "models")
    if slow:
        repo.version("m", 1, slow_joblib_bytes(0.5, "m"), "model.joblib")
    else:
        repo.version("m", 1, skops_bytes("m"))
    repo.version("k", 1, skops_bytes("k"))
    if toml:
        repo.toml("m", toml)
    log = EventLog()
    plane = DataPlane.from_settings(
        Settings(models=[str(repo.root)], trust_pickle=slow, **settings),  # type: ignore[arg-type]
        events=Events(log),
    )
    return plane, log


@pytest.mark.parametrize("batching", [True, False])
def test_request_events_carry_model_version_protocol_status_rows_and_timings(tmp_path: Path, batching: bool) -> None:
    plane, log = repo_plane(tmp_path, batching=batching)  # a model run on its own is timed too
    ctx = CallContext(protocol="records", request_id="req-1")

    async def go() -> None:
        await plane.start()
        log.events.clear()
        reply = await plane.infer("m", InferenceRequest(repo_rows(1.0, -1.0)), ctx)
        assert reply.model_version == "1" and reply.outputs["label"].tolist() == ["m-hi", "m-lo"]
        with pytest.raises(InvalidInput):
            await plane.infer("m", InferenceRequest({"nope": np.zeros((1, 5))}), ctx)
        await plane.close()

    asyncio.run(go())
    started = log.of(RequestStarted)
    assert started == [RequestStarted("m", "1", "records", "req-1")] * 2
    ok, bad = log.of(RequestFinished)
    assert (ok.model, ok.version, ok.protocol, ok.status, ok.rows, ok.request_id) == (
        "m",
        "1",
        "records",
        200,
        2,
        "req-1",
    )
    assert ok.queue_s >= 0 and ok.compute_s > 0 and ok.duration_s >= ok.compute_s
    assert (bad.status, bad.rows) == (400, 0)
    assert [(b.model, b.version, b.rows, b.requests) for b in log.of(BatchRun)] == [("m", "1", 2, 1)]


def test_batch_run_events_count_the_rows_and_requests_batched_together(tmp_path: Path) -> None:
    plane, log = repo_plane(tmp_path, "batching = { max_batch_size = 64, max_delay_ms = 50 }\n")

    async def go() -> None:
        await plane.start()
        log.events.clear()
        await asyncio.gather(*(plane.infer("m", InferenceRequest(repo_rows(*[1.0] * n))) for n in (1, 2, 3)))
        await plane.close()

    asyncio.run(go())
    runs = log.of(BatchRun)
    assert sum(b.rows for b in runs) == 6 and sum(b.requests for b in runs) == 3
    assert max(b.requests for b in runs) > 1  # within 50 ms, the three calls share a batch
    assert all(b.seconds >= 0 for b in runs)


def test_rejections_are_reported_with_their_reason(tmp_path: Path) -> None:
    plane, log = repo_plane(tmp_path, "max_inflight = 1\n")
    ctx = CallContext(protocol="v2")

    async def go() -> None:
        await plane.start()
        with pytest.raises(ModelNotFound, match="no model named 'nope'"):
            plane.call("nope", ctx)
        with plane.call("m", ctx):
            with pytest.raises(Overloaded, match=r"max_inflight") as info:
                plane.call("m", ctx)
            assert info.value.headers["retry-after"] == "1"
            with plane.call("k", ctx):  # the limit is m's own; k is not affected
                pass
        with plane.call("m", ctx):  # the slot is free again
            pass
        await plane.close()

    asyncio.run(go())
    rejected = log.of(RequestRejected)
    assert rejected == [RequestRejected("nope", "v2", "not_found", 404), RequestRejected("m", "v2", "overloaded", 503)]


def test_the_servers_max_inflight_applies_without_a_model_toml(tmp_path: Path) -> None:
    plane, log = repo_plane(tmp_path, max_inflight=2)

    async def go() -> None:
        await plane.start()
        with plane.call("m"), plane.call("m"), pytest.raises(Overloaded):
            plane.call("m")
        await plane.close()

    asyncio.run(go())
    assert [r.reason for r in log.of(RequestRejected)] == ["overloaded"]


def test_a_deadline_shorter_than_the_timeout_bounds_the_call(tmp_path: Path) -> None:
    plane, log = repo_plane(tmp_path, slow=True, inference_timeout_s=30.0)

    async def go() -> None:
        await plane.start()
        ctx = CallContext(deadline=time.monotonic() + 0.1)
        began = time.monotonic()
        with pytest.raises(InferenceTimeout, match="the request's deadline"):
            await plane.infer("m", InferenceRequest(repo_rows(100.0)), ctx)
        assert time.monotonic() - began < 0.45
        await asyncio.sleep(0.5)  # the batch that was running finishes
        past = CallContext(deadline=time.monotonic() - 1)
        with pytest.raises(InferenceTimeout, match="deadline"):
            await plane.infer("m", InferenceRequest(repo_rows(1.0)), past)
        await plane.close()

    asyncio.run(go())
    assert [f.status for f in log.of(RequestFinished)][-2:] == [504, 504]


def test_model_toml_limits_apply_to_the_version(tmp_path: Path) -> None:
    plane, _ = repo_plane(tmp_path, "max_rows = 2\ninference_timeout_s = 0.1\n", slow=True, max_rows=100)

    async def go() -> None:
        await plane.start()
        with pytest.raises(PayloadTooLarge, match="limit is 2 rows"):
            await plane.infer("m", InferenceRequest(repo_rows(1.0, 1.0, 1.0)))
        await plane.infer("k", InferenceRequest(repo_rows(*[1.0] * 50)))  # k keeps the server's limit
        with pytest.raises(InferenceTimeout, match=r"inference timeout of 0\.1 s"):
            await plane.infer("m", InferenceRequest(repo_rows(100.0)))
        await asyncio.sleep(0.5)
        # timed=False (a batch job's chunk): the inference timeout does not apply
        reply = await plane.infer("m", InferenceRequest(repo_rows(100.0)), CallContext(timed=False))
        assert reply.outputs["label"].tolist() == ["m-hi"]
        await plane.close()

    asyncio.run(go())


def test_untimed_calls_still_keep_their_deadline(tmp_path: Path) -> None:
    plane, _ = repo_plane(tmp_path, slow=True, inference_timeout_s=0.05)

    async def go() -> None:
        await plane.start()
        ctx = CallContext(timed=False, deadline=time.monotonic() + 0.1)
        with pytest.raises(InferenceTimeout, match="deadline"):
            await plane.infer("m", InferenceRequest(repo_rows(100.0)), ctx)
        await asyncio.sleep(0.5)
        await plane.close()

    asyncio.run(go())


def test_limits_edited_in_model_toml_apply_without_a_reload(tmp_path: Path) -> None:
    plane, _ = repo_plane(tmp_path, "max_rows = 5\n")

    async def go() -> None:
        await plane.start()
        handle = plane.resolve("m")
        ModelRepo(tmp_path / "models").toml("m", "max_rows = 1\n")
        await plane.repository.reconcile()
        assert plane.resolve("m") is handle  # same files: the loaded version is kept
        with pytest.raises(PayloadTooLarge, match="limit is 1 rows"):
            await plane.infer("m", InferenceRequest(repo_rows(1.0, 1.0)))
        await plane.close()

    asyncio.run(go())


def test_a_key_limited_to_one_model_cannot_reach_another(tmp_path: Path) -> None:
    plane, log = repo_plane(tmp_path)
    only_m = CallContext(principal=Principal("id", "only-m", frozenset({"predict"}), frozenset({"m"})))

    async def go() -> None:
        await plane.start()
        with pytest.raises(ModelNotFound) as hidden:
            await plane.infer("k", InferenceRequest(repo_rows(1.0)), only_m)
        with pytest.raises(ModelNotFound) as unknown:
            await plane.infer("zzz", InferenceRequest(repo_rows(1.0)), only_m)
        assert hidden.value.detail == unknown.value.detail.replace("'zzz'", "'k'")  # no hint that k exists
        assert "k" not in hidden.value.detail.split(";", 1)[1]
        for how in ({"version": "1"}, {"label": "stable"}):
            with pytest.raises(ModelNotFound):
                plane.resolve("k", only_m, **how)
        assert plane.names(only_m) == ["m"]
        reply = await plane.infer("m", InferenceRequest(repo_rows(1.0)), only_m)
        assert reply.outputs["label"].tolist() == ["m-hi"]
        await plane.close()

    asyncio.run(go())
    assert [r.reason for r in log.of(RequestRejected)] == ["not_found", "not_found"]


def test_a_model_toml_max_queue_ms_reaches_the_version(tmp_path: Path) -> None:
    plane, _ = repo_plane(tmp_path, "max_queue_ms = 250\n")

    async def go() -> None:
        await plane.start()
        assert plane.resolve("m").max_queue_s == 0.25  # the gate and the batcher's deadline use it
        assert plane.resolve("k").max_queue_s is None  # the server's --max-queue-ms for the others
        await plane.close()

    asyncio.run(go())


def test_the_tightest_queue_budget_is_the_smallest_of_the_models_in_flight_and_follows_an_edit(tmp_path: Path) -> None:
    """What pacing turns its order by (``http/pacing.py``): the server's while no call is in flight; a model.toml
    budget below the server's while that model has calls in flight (an idle one does not turn the order for the
    model that has the traffic); a budget edited in model.toml once the repository has seen it."""
    plane, _ = repo_plane(tmp_path, "max_queue_ms = 20\n", max_queue_ms=2000)

    async def go() -> None:
        assert plane.tightest_queue_s() == 2.0  # nothing ready yet: the server's
        await plane.start()
        assert plane.tightest_queue_s() == 2.0  # m's 20 ms, but m is idle
        with plane.admit("k"):
            assert plane.tightest_queue_s() == 2.0  # k's traffic, at the server's
            with plane.admit("m"):
                assert plane.tightest_queue_s() == 0.02  # m's own, below the server's (k's)
                ModelRepo(tmp_path / "models").toml("m", "max_queue_ms = 5000\n")
                await plane.repository.reconcile()
                assert plane.tightest_queue_s() == 2.0  # k, at the server's, is now the tightest
        assert plane.tightest_queue_s() == 2.0
        await plane.close()

    asyncio.run(go())
    none, _ = repo_plane(tmp_path / "none", max_queue_ms=None)
    asyncio.run(none.start())
    with none.admit("m"):
        assert none.tightest_queue_s() is None  # no budget anywhere
    asyncio.run(none.close())
    one, _ = repo_plane(tmp_path / "one", "max_queue_ms = 30\n", max_queue_ms=None)
    asyncio.run(one.start())
    with one.admit("m"):
        assert one.tightest_queue_s() == 0.03  # a model's own, with no server budget
    asyncio.run(one.close())


# refusals before a request is read (DataPlane.shed) ------------------------------------------------------------
def test_nothing_is_shed_while_the_gate_admits_and_the_repository_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    dp = loaded(Recorder())

    def never() -> list[str]:
        raise AssertionError("the repository was asked while the gate admits")

    monkeypatch.setattr(dp.repository, "ready_names", never)
    assert not dp.gate.refusing and dp.shed() is None
    monkeypatch.undo()
    unload(dp)


def test_a_call_is_shed_only_when_every_ready_model_would_refuse_it_and_its_retry_after_is_not_booked() -> None:
    dp = loaded(Recorder("a"), Recorder("b"), max_inflight=1)
    gate = dp.gate
    gate.refusing = True
    gate.inflight["a"] = 1
    assert dp.shed() is None and not gate.refusing  # b has room, no refusal lately: the next go to the gate itself
    assert dp.shed() is None  # nothing asked now
    gate.refusing = True
    gate.inflight["b"] = 1
    shed = dp.shed()
    assert shed == Shed(None, SHED_DETAIL, 1, "a") and gate.refusing  # several models: none named
    assert gate.returns == {}  # booked when the refusal is given (shedding.py), not here
    unload(dp)
    dp = loaded(Recorder("a"), max_inflight=1)
    dp.gate.refusing, dp.gate.inflight["a"] = True, 1
    only = "model 'a' already has 1 requests in flight, the limit (max_inflight); retry shortly"
    assert dp.shed() == Shed("a", only, 1, "a")  # one model: named, as the app's refusal names it
    unload(dp)


def test_a_refusal_at_every_in_flight_limit_stands_until_a_call_moves_or_the_limits_change(tmp_path: Path) -> None:
    """With every version at its in-flight limit, ``shed`` decides once and gives the same refusal, whatever the
    head's wait, until a call enters or leaves the gate or what is served changes (a limit edited in model.toml)."""
    repo = ModelRepo(tmp_path / "models")
    repo.version("m", 1, skops_bytes("m"))
    repo.toml("m", "max_inflight = 1\n")
    plane = DataPlane.from_settings(Settings(models=[str(repo.root)], max_queue_ms=100))

    async def go() -> None:
        await plane.start()
        ctx = CallContext(protocol="v2")
        with plane.admit("m", ctx):
            with pytest.raises(Overloaded):
                plane.admit("m", ctx)  # the gate refuses: heads are asked about now
            first = plane.shed()
            assert first is not None and "max_inflight" in first.detail
            assert plane.shed(5.0) is first  # the same refusal, over the queue budget or not
        assert plane.shed() is None  # the call left: room
        with plane.admit("m", ctx):
            plane.gate.refusing = True  # (as a refusal would set it)
            assert plane.shed() is not None
            repo.toml("m", "max_inflight = 2\n")
            await plane.repository.reconcile(["m"])
            assert plane.shed() is None  # the limit edited: room for a second call
            with plane.admit("m", ctx):
                plane.gate.refusing = True
                again = plane.shed()
                assert again is not None and "2 requests in flight" in again.detail
        await plane.close()

    asyncio.run(go())


def test_a_model_name_gone_that_served_nothing_makes_the_kept_refusal_name_the_only_one(tmp_path: Path) -> None:
    """Two names known, one serving: a refusal names none; the other name gone (it never served, so no version
    retires): the only model is named again, the refusal kept for every limit reached not given again."""
    repo = ModelRepo(tmp_path / "models")
    repo.version("a", 1, skops_bytes("a"))
    repo.toml("a", "max_inflight = 1\n")
    repo.version("b", 1, b"not a model")  # fails to load: known, serves nothing
    plane = DataPlane.from_settings(Settings(models=[str(repo.root)]))

    async def go() -> None:
        await plane.start()
        assert [e.name for e in plane.repository.ready_entries()] == ["a"]
        ctx = CallContext(protocol="v2")
        with plane.admit("a", ctx):
            with pytest.raises(Overloaded):
                plane.admit("a", ctx)
            first = plane.shed()
            assert first is not None and first.detail == SHED_DETAIL  # "b" known: no model named
            shutil.rmtree(repo.root / "b")
            await plane.repository.reconcile(["b"])
            again = plane.shed()
            assert again is not None and again.model == "a" and "model 'a'" in again.detail
        await plane.close()

    asyncio.run(go())


def test_a_head_is_shed_for_its_own_wait_to_be_read_not_for_the_last_calls() -> None:
    """Under a flood, heads wait their turn to be read (http/pacing.py): one that has waited past the queue budget
    is refused on its head, whether or not the model is busy, while one read at once after it (a client coming
    back the moment its answer arrived) is not refused for the wait the others had."""
    dp = loaded(Recorder(), max_queue_ms=100)
    with dp.admit("recorder", CallContext(protocol="v2")):  # a call in flight, as under a flood
        with pytest.raises(Overloaded):  # the event loop got to this head 300 ms late
            dp.call("recorder", CallContext(protocol="v2", arrived=time.monotonic() - 0.3))
        shed = dp.shed(0.25)
        assert shed is not None and shed.model == "recorder"
        assert "after the 250 ms it waited to be read" in shed.detail
        assert dp.gate.refusing
        assert dp.shed(0.0) is None  # read at once: handed on, to be decided by the gate
        with pytest.raises(Overloaded):
            dp.call("recorder", CallContext(protocol="v2", arrived=time.monotonic() - 0.3))
    # nothing in flight: the model is idle, yet a head that has waited past the budget would be answered past it
    assert dp.gate.refusing and dp.shed(0.25) is not None
    assert dp.shed(0.001) is None
    unload(dp)


def test_the_gate_stays_refusing_while_refusals_alternate_with_admissions_and_stops_a_while_after_the_last() -> None:
    """Under overload admissions and refusals alternate: every head is asked about on its head (``shed``) until
    ``REFUSING_FOR_S`` has passed since the last refusal, so those to be refused are refused there, not through the
    app (about twice the cost); then a head with room clears the flag and the protocol's check is one read again."""
    dp = loaded(Recorder(), max_queue_ms=100)
    clock = Clock(100.0)
    dp.gate.clock = clock
    v2 = CallContext(protocol="v2")
    with dp.admit("recorder", v2):
        with pytest.raises(Overloaded):
            dp.call("recorder", CallContext(protocol="v2", arrived=time.monotonic() - 0.3))
        with dp.admit("recorder", v2):  # admitted: the gate is still refusing
            assert dp.gate.refusing and dp.shed(0.0) is None and dp.gate.refusing
            assert dp.shed(0.2) is not None  # the next stale head is refused on its head
    clock.now += REFUSING_FOR_S + 0.01
    assert dp.shed(0.0) is None and not dp.gate.refusing  # room, and no refusal for a while
    assert dp.shed(0.2) is None  # nothing asked now: the gate decides again
    with pytest.raises(Overloaded):  # and refuses it, which sets the flag
        dp.call("recorder", CallContext(protocol="v2", arrived=time.monotonic() - 0.2))
    assert dp.gate.refusing
    # a front end that never asks shed (gRPC, jobs): an admission a while after the last refusal clears it
    clock.now += REFUSING_FOR_S + 0.01
    with dp.admit("recorder", v2):
        assert not dp.gate.refusing
    unload(dp)


def test_a_call_is_refused_when_it_would_be_answered_past_the_budget_on_its_head_and_when_shed_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue budget bounds when a call is expected to be answered (its batch run, not only started): the
    gate and the protocol's refusal before the app (``shed``) refuse for the same estimate and say the same; a
    job's chunk is not refused."""
    dp = loaded(Recorder(), max_queue_ms=100)
    queue = batcher(dp, "recorder")
    v2 = CallContext(protocol="v2")
    with dp.admit("recorder", v2):  # a call in flight, its body still to come
        monkeypatch.setattr(queue, "expected_answer", lambda arriving=0: 0.09)
        with dp.admit("recorder", v2):  # answered in about 90 ms: within the 100
            pass
        monkeypatch.setattr(queue, "expected_answer", lambda arriving=0: 0.11)
        with pytest.raises(Overloaded, match="would answer this request in about 110 ms"):
            dp.admit("recorder", v2)
        shed = dp.shed()  # the protocol refuses the next head for the same reason
        assert shed is not None and "would answer this request in about 110 ms" in shed.detail
        with dp.admit("recorder", CallContext("jobs", timed=False)):  # batch work: no queue-time bound
            pass
    monkeypatch.undo()
    unload(dp)


def test_a_call_is_shed_only_when_every_serving_version_would_refuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane, _ = repo_plane(tmp_path, 'version_policy = "all"\n', max_queue_ms=100)
    ModelRepo(tmp_path / "models").version("m", 2, skops_bytes("m2"))

    async def go() -> None:
        await plane.start()
        versions = plane.repository.entry("m").serving
        assert sorted(versions) == ["1", "2"]
        for name in ("m", "k"):
            monkeypatch.setattr(plane.resolve(name).batcher, "expected_answer", lambda arriving=0: 0.5)
        plane.gate.inflight.update(m=1, k=1)  # calls in flight on both models
        plane.gate.refusing = True
        assert plane.shed() is None  # version 1 has an idle queue: a call to it would be admitted
        plane.gate.refusing = True
        monkeypatch.setattr(versions["1"].batcher, "expected_answer", lambda arriving=0: 0.5)
        shed = plane.shed()
        assert shed is not None and shed.model is None and shed.at_least == 1  # two models: none named
        await plane.close()

    asyncio.run(go())


def test_a_shed_call_names_no_model_when_the_server_knows_another_even_one_not_ready() -> None:
    class Broken(Recorder):
        def load(self) -> None:
            raise RuntimeError("does not load")

    dp = DataPlane.from_settings(Settings(max_inflight=1), models=[Recorder("a"), Broken("broken")])
    asyncio.run(dp.start())
    assert dp.repository.ready_names() == ["a"]
    dp.gate.refusing, dp.gate.inflight["a"] = True, 1
    assert dp.shed() == Shed(None, SHED_DETAIL, 1, "a")  # a call for "broken" is not told a's limits
    unload(dp)
