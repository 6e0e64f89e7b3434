"""The request path's share of the prediction log: sampling, the bounded queue, and nothing at all when off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from helpers.monitor import Shift
from modelapi import metrics
from modelapi.dataplane import DataPlane
from modelapi.events import Events, Observer, PredictionsServed
from modelapi.http.app import create_app
from modelapi.inference import InferenceRequest
from modelapi.monitor.logger import PredictionLogger
from modelapi.monitor.parquet import ParquetStore
from modelapi.monitor.policy import Policies
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
