"""The whole path in process: answered rows -> the prediction log -> the reference -> drift, over HTTP.

A stream in which one feature's mean moves by two standard deviations is flagged on that feature and on no
other; the drift gauges say the same."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from helpers.monitor import Shift, records
from helpers.services import postgres_schema
from modelapi import metrics
from modelapi.http.app import create_app
from modelapi.monitor.gauges import DriftGauges
from modelapi.monitor.store import LogStore, open_store
from modelapi.protocols.monitor import routes
from modelapi.settings import Settings

ROWS = 600


@pytest.fixture(autouse=True)
def single_process_metrics() -> None:
    metrics.setup(None)


def wait_for_rows(store: LogStore, model: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store.read(model).num_rows < n:
        assert time.monotonic() < deadline, f"{store.read(model).num_rows} of {n} rows logged"
        time.sleep(0.05)


def settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        state_dir=tmp_path,
        log_predictions=1.0,
        log_flush_s=0.05,
        reference_rows=ROWS,
        drift_window_rows=ROWS,
        **extra,  # type: ignore[arg-type]
    )


def send(client: TestClient, rows: list[dict[str, object]]) -> None:
    for i in range(0, len(rows), 100):
        r = client.post("/models/shift/predict", json=rows[i : i + 100])
        assert r.status_code == 200, r.text


@contextlib.contextmanager
def database(kind: str) -> Iterator[dict[str, str]]:
    if kind == "parquet":
        yield {}
    else:
        with postgres_schema() as url:
            yield {"database_url": url}


@pytest.mark.parametrize("kind", ["parquet", "postgres"])
def test_a_feature_moved_two_standard_deviations_is_flagged_alone(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "CACHE_S", 0.0)
    rng = np.random.default_rng(7)
    with database(kind) as extra:
        config = settings(tmp_path, **extra)
        store = open_store(config)
        app = create_app([Shift()], config)
        try:
            run_stream(app, store, rng)
        finally:
            store.close()


def run_stream(app: Starlette, store: LogStore, rng: np.random.Generator) -> None:
    with TestClient(app) as client:
        send(client, records(rng, ROWS))
        wait_for_rows(store, "shift", ROWS)
        before = client.get("/models/shift/monitor").json()
        assert before["reference"]["source"] == f"the first {ROWS} logged rows"
        assert before["versions"]["1"]["last_rows"]["drifted"] == []

        send(client, records(rng, ROWS, shift={"x2": 2.0}))
        # a request with a bad input is rejected, and counted so
        assert client.post("/models/shift/predict", json={"x1": "high"}).status_code == 400
        wait_for_rows(store, "shift", 2 * ROWS)
        time.sleep(0.2)  # the tallies go with the writer's next batch
        status = client.get("/models/shift/monitor").json()
        monitor = app.state.services.monitor
        DriftGauges(monitor, metrics.families(), 60).update("shift")
        scrape = client.get("/metrics").text

    window = status["versions"]["1"]["last_rows"]
    assert window["rows"] == ROWS
    assert window["drifted"] == ["x2"]
    by_name = {f["feature"]: f for f in window["features"]}
    assert window["features"][0]["feature"] == "x2"  # sorted by severity
    assert by_name["x2"]["psi"] > 1.0 and by_name["x2"]["p_value"] < 1e-6 and by_name["x2"]["test"] == "ks"
    for name in ("x1", "x3", "city"):
        assert by_name[name]["psi"] < 0.1 and by_name[name]["severity"] == "none", by_name[name]
    assert by_name["city"]["test"] == "chi2"
    # x1 + x2 decides the label: its mix moved too, and the day window holds both halves
    assert window["prediction"]["output"] == "label" and window["prediction"]["psi"] > 0.25
    day = status["versions"]["1"]["last_day"]
    assert day["rows"] == 2 * ROWS
    assert day["requests"] == {"total": 13, "rejected": 1, "rejected_rate": 1 / 13}
    assert status["logging"] == {"rate": 1.0, "written": 2 * ROWS, "dropped": 0}

    assert 'modelapi_feature_drift_psi{feature="x2",model="shift",version="1"}' in scrape
    psi = {
        line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("modelapi_feature_drift_psi{")
    }
    assert psi["x2"] > 1.0 and max(psi["x1"], psi["x3"], psi["city"]) < 0.1
    assert 'modelapi_inputs_rejected_ratio{model="shift",version="1"}' in scrape
