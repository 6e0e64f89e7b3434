"""Per-model monitoring settings: model.toml's [monitor] table over the server's, checked strictly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from helpers.model_repo import make_repository
from modelapi import metrics
from modelapi.http.app import create_app
from modelapi.monitor.parquet import ParquetStore
from modelapi.monitor.policy import Policies
from modelapi.repository.config import ConfigError, MonitorConfig, parse_config
from modelapi.settings import Settings


def test_the_monitor_table_is_read_and_checked() -> None:
    config = parse_config(
        {"monitor": {"log_predictions": 0.25, "sensitive": ["ssn"], "reference": "train.csv", "retention_days": 7}},
        "m/model.toml",
    )
    assert config.monitor == MonitorConfig(0.25, ("ssn",), "train.csv", None, 7.0, None)
    assert parse_config({}, "m/model.toml").monitor == MonitorConfig()
    for table, message in [
        ({"log_prediction": 0.1}, "unknown key monitor.log_prediction; known keys: log_predictions, max_bytes"),
        ({"log_predictions": 2}, "monitor.log_predictions: expected a share from 0 to 1, got 2"),
        ({"sensitive": "ssn"}, 'monitor.sensitive: expected a list of input names such as ["ssn"]'),
        ({"reference": "train.json"}, "monitor.reference: expected a .parquet or .csv file name"),
        ({"reference": "../other/train.csv"}, "monitor.reference: expected a path inside the model's directory"),
        ({"max_bytes": 0}, "monitor.max_bytes: expected a positive integer, got 0"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            parse_config({"monitor": table}, "m/model.toml")


def test_settings_reject_a_reference_that_is_no_table() -> None:
    with pytest.raises(ValueError, match=r"expected a \.parquet or \.csv file"):
        Settings(reference=["m=train.json"])
    assert Settings(reference=["m=data/day=1/train.csv", "all.parquet"]).reference


def test_model_toml_turns_logging_on_for_its_model_and_names_its_reference(tmp_path: Path) -> None:
    metrics.setup(None)
    root = make_repository(
        tmp_path / "repo",
        {"m": [1], "quiet": [1]},
        {"m": '[monitor]\nlog_predictions = 1.0\nreference = "train.parquet"\nsensitive = ["secret"]'},
    )
    rng = np.random.default_rng(1)
    # the training file holds the sensitive input too (the model never takes it here: it is only never logged)
    train = pa.table({"x": rng.normal(5.0, 1.0, 500), "secret": rng.normal(0.0, 1.0, 500)})
    pq.write_table(train, root / "m" / "train.parquet")
    settings = Settings(models=[str(root)], state_dir=tmp_path / "state", log_flush_s=0.05)
    policies = Policies(settings)
    assert policies.any_enabled()  # the server's rate is 0; model.toml turns it on
    assert policies.get("m").reference == root / "m" / "train.parquet"
    assert policies.get("quiet").rate == 0.0

    app = create_app(None, settings)
    store = ParquetStore(tmp_path / "state" / "predictions")
    with TestClient(app) as client:
        for x in rng.normal(0.0, 1.0, 40):  # far from the reference's mean of 5
            assert client.post("/models/m/predict", json={"x": float(x)}).status_code == 200
        assert client.post("/models/quiet/predict", json={"x": 1.0}).status_code == 200
        deadline = time.monotonic() + 20
        while store.read("m").num_rows < 40:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = client.get("/models/m/monitor").json()
    assert store.models() == ["m"]  # nothing of the model that does not log
    assert status["reference"] == {"source": "file train.parquet", "rows": 500}  # its name, never a server path
    assert status["versions"]["1"]["last_rows"]["drifted"] == ["x"]
    # the input marked sensitive is named beside the features, not listed among them as one without rows
    assert status["sensitive"] == ["secret"]
    assert [f["feature"] for f in status["versions"]["1"]["last_rows"]["features"]] == ["x"]
