"""The request path's share of the prediction log: sampling, the bounded queue, and nothing at all when off."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from helpers.monitor import Shift
from modelapi import metrics
from modelapi.dataplane import DataPlane
from modelapi.events import Events, Observer, PredictionsServed
from modelapi.http.app import create_app
from modelapi.inference import InferenceRequest
from modelapi.monitor.logger import PredictionLogger
from modelapi.monitor.parquet import ParquetStore
from modelapi.monitor.policy import ModelPolicy, Policies
from modelapi.settings import Settings


@pytest.fixture(autouse=True)
def single_process_metrics() -> None:
    metrics.setup(None)


def event(rows: int) -> PredictionsServed:
    return PredictionsServed(
        "shift", "1", "records", "rid", None, 0.0, 0.001, {"x1": np.zeros(rows)}, {"label": np.zeros(rows)}
    )


def counter(name: str, model: str) -> float:
    body = metrics.render()[0].decode()
    prefix = f'{name}{{model="{model}"}} '
    return next((float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix)), 0.0)


def test_a_full_queue_drops_rows_and_counts_them(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, log_predictions=1.0, log_queue_rows=5)
    logger = PredictionLogger(settings, Policies(settings), ParquetStore(tmp_path), metrics.families())
    # no writer thread: nothing leaves the queue
    logger.predictions_served(event(3))
    logger.predictions_served(event(3))  # 6 > 5: dropped whole, at once
    logger.predictions_served(event(2))
    assert logger.waiting == 5
    assert logger.dropped["shift"] == 3
    assert counter("modelapi_prediction_log_dropped_rows_total", "shift") == 3
    logger.predictions_served(event(1))
    assert logger.dropped["shift"] == 4
    # the writer drains it: written, counted, and the queue has room again
    logger.start()
    logger.stop()
    assert logger.waiting == 0 and logger.written["shift"] == 5
    assert counter("modelapi_prediction_log_rows_total", "shift") == 5
    assert ParquetStore(tmp_path).read("shift").num_rows == 5


class Recorder(Observer):
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.events: list[PredictionsServed] = []

    def sample_rate(self, model: str) -> float:
        return self.rate

    def predictions_served(self, event: PredictionsServed) -> None:
        self.events.append(event)


def run(plane: DataPlane, rows: int, times: int) -> None:
    async def go() -> None:
        await plane.start()
        inputs = {
            "x1": np.arange(rows, dtype=float),
            "x2": np.zeros(rows),
            "x3": np.zeros(rows),
            "city": np.array(["paris"] * rows, dtype=object),
        }
        for _ in range(times):
            await plane.infer("shift", InferenceRequest(dict(inputs)))
        await plane.close()

    asyncio.run(go())


def test_without_a_sampler_no_rows_are_handed_out() -> None:
    class Tally(Observer):  # an observer of requests that does not sample (metrics, logs)
        def request_finished(self, event: object) -> None:
            pass

    events = Events(Tally())
    assert events.active and not events.sampling
    recorder = Recorder(0.0)
    events.subscribe(recorder)
    assert events.sampling
    plane = DataPlane.from_settings(Settings(), models=[Shift()], events=events)
    run(plane, 1, 20)
    assert recorder.events == []  # rate 0: asked, and nothing built


def test_sampled_rows_are_the_rows_answered() -> None:
    recorder = Recorder(0.5)
    plane = DataPlane.from_settings(Settings(), models=[Shift()], events=Events(recorder))
    run(plane, 1000, 2)
    rows = sum(len(e.inputs["x1"]) for e in recorder.events)
    assert 800 < rows < 1200  # half of 2000, give or take
    for e in recorder.events:
        assert e.model == "shift" and e.version == "1" and e.key is None
        np.testing.assert_array_equal(e.outputs["score"], e.inputs["x1"])  # x2 = 0: each row's own answer
    recorder.rate = 1.0
    recorder.events.clear()
    plane = DataPlane.from_settings(Settings(), models=[Shift()], events=Events(recorder))
    run(plane, 1, 10)
    assert len(recorder.events) == 10 and recorder.events[0].latency_s > 0


def test_with_logging_off_the_app_subscribes_nothing_that_samples(tmp_path: Path) -> None:
    app = create_app([Shift()], Settings(state_dir=tmp_path))
    events = app.state.dataplane.events
    assert not events.sampling  # a call reads one attribute and builds nothing for the log
    assert app.state.services.monitor.logger is None
    on = create_app([Shift()], Settings(state_dir=tmp_path, log_predictions=0.1))
    assert on.state.dataplane.events.sampling
    on.state.services.monitor.stop()


def served(model: str, version: str, t: float, rid: str, inputs: dict[str, np.ndarray]) -> PredictionsServed:
    rows = len(next(iter(inputs.values())))
    return PredictionsServed(
        model, version, "records", rid, "ci-key", t, 0.002, inputs, {"label": np.array(["yes"] * rows)}
    )


def test_calls_wait_without_waking_the_writer_until_a_batch_is_due(tmp_path: Path) -> None:
    """A queued call wakes nobody: the writer takes what waits on its own tick and writes at the flush, or once
    half the queue (at most BATCH_ROWS rows) waits; the flush at shutdown writes the rest."""
    settings = Settings(state_dir=tmp_path, log_predictions=1.0, log_queue_rows=20, log_flush_s=3600.0)
    logger = PredictionLogger(settings, Policies(settings), ParquetStore(tmp_path), metrics.families())
    logger.start()
    try:
        for i in range(9):
            logger.predictions_served(event(1))
            assert not logger._wake.is_set(), i  # no hand-off per call
        assert logger.waiting == 9 and logger.written["shift"] == 0
        logger.predictions_served(event(1))  # 10 rows: half the queue
        deadline = time.monotonic() + 10
        while logger.written["shift"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert logger.written["shift"] == 10 and logger.waiting == 0
        logger.predictions_served(event(3))
        assert logger.waiting == 3 and logger.written["shift"] == 10  # waits for the next batch or the flush
    finally:
        logger.stop()
    assert logger.written["shift"] == 13 and logger.waiting == 0 and logger.dropped["shift"] == 0
    assert ParquetStore(tmp_path).read("shift").num_rows == 13


class SsnOfA(Policies):
    """Model ``a``'s input ``ssn`` is sensitive (as its model.toml's ``[monitor] sensitive`` would say)."""

    def get(self, name: str) -> ModelPolicy:
        policy = super().get(name)
        return dataclasses.replace(policy, sensitive=frozenset({"ssn"})) if name == "a" else policy


def test_a_drained_batch_keeps_each_call_its_rows_metadata_and_order(tmp_path: Path) -> None:
    """Two ticks' drains hold calls of several models and versions, of one row and of several, with text of several
    lengths and a sensitive input: each (model, version) gets its calls' rows in order, each row its call's
    request id, time and key name, and the sensitive input is left out."""
    settings = Settings(state_dir=tmp_path, log_predictions=1.0, log_flush_s=3600.0)
    logger = PredictionLogger(settings, SsnOfA(settings), ParquetStore(tmp_path))
    t0 = 1_790_000_000.0
    calls = [
        served("a", "1", t0, "r0", {"x": np.array([1.0]), "ssn": np.array(["1"]), "city": np.array(["paris"])}),
        served("b", "7", t0 + 1, "r1", {"z": np.array([5, 6], dtype=np.int64)}),
        served(
            "a",
            "1",
            t0 + 2,
            "r2",
            {"x": np.array([2.0, 3.0]), "ssn": np.array(["2", "3"]), "city": np.array(["rome", "oslo"])},
        ),
        served("a", "2", t0 + 3, "r3", {"x": np.array([4.0]), "ssn": np.array(["4"]), "city": np.array(["lima"])}),
        served("a", "1", t0 + 4, "r4", {"x": np.array([5.0]), "ssn": np.array(["5"]), "city": np.array(["amsterdam"])}),
    ]
    for call in calls[:2]:
        logger.predictions_served(call)
    batch = logger._drain({})  # a tick: the events become columns and are let go
    for call in calls[2:]:
        logger.predictions_served(call)
    assert logger.waiting == 7 and len(logger._queue) == 3
    logger._drain(batch)  # the next tick
    assert not logger._queue and all(p.calls == [] for p in batch.values())
    assert len(batch[("a", "1", int(t0 // 86400))].meta) == 2  # two ticks' columns, one table at the flush
    assert logger.waiting == 7 and logger.written == {}
    logger._flush(batch)
    assert logger.waiting == 0 and logger.written == {"a": 5, "b": 2}
    a = ParquetStore(tmp_path).read("a")
    a1 = a.filter(pc.equal(a["version"], "1"))
    assert a1.column("input.x").to_pylist() == [1.0, 2.0, 3.0, 5.0]
    assert a1.column("input.city").to_pylist() == ["paris", "rome", "oslo", "amsterdam"]
    assert a1.column("request_id").to_pylist() == ["r0", "r2", "r2", "r4"]
    assert [t.timestamp() for t in a1.column("time").to_pylist()] == [t0, t0 + 2, t0 + 2, t0 + 4]
    assert set(a1.column("key").to_pylist()) == {"ci-key"} and set(a1.column("pid").to_pylist()) == {os.getpid()}
    assert "input.ssn" not in a.column_names
    b = ParquetStore(tmp_path).read("b")
    assert b.column("input.z").to_pylist() == [5, 6] and b.column("request_id").to_pylist() == ["r1", "r1"]
