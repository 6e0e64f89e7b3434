"""``modelapi inspect``: a readable summary of what would be served, or JSON with --json; no server starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from modelapi.cli import main
from modelapi.inspect import summary
from modelapi.models.registry import load_model


def test_demo_model_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from modelapi.demo import DEMO_MODEL_PATH

    assert main(["inspect", str(DEMO_MODEL_PATH)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "iris  (sklearn, version 1)"
    assert any(line.split() == ["format", "skops"] for line in lines)
    assert any(line.startswith("  trust") and "not needed" in line for line in lines)
    assert any(line.split()[:4] == ["inputs", "sepal_length", "FP64", "[-1]"] and "e.g. 5.1" in line for line in lines)
    assert any("probabilities" in line and "labels: setosa, versicolor, virginica" in line for line in lines)


def test_json_option_keeps_the_machine_readable_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "toymodels:IrisClassifier", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["name"] == "iris" and described["outputs"][1]["labels"][0] == "setosa"


def test_native_model_shows_objective_missing_values_and_class_labels(tmp_path: Path) -> None:
    X = np.random.RandomState(0).normal(size=(40, 2))
    clf = xgb.XGBClassifier(n_estimators=2).fit(X, (X[:, 0] > 0).astype(int))
    clf.save_model(tmp_path / "m.json")
    text = summary(load_model(tmp_path / "m.json"))
    assert "objective binary:logistic" in " ".join(text.split())
    assert "input  FP64 [-1, 2]   (null: missing)" in text
    assert "labels: 0, 1" in text


def test_pickle_shows_how_it_was_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    path = tmp_path / "reg.joblib"
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), path)
    assert main(["inspect", str(path)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(["inspect", str(path), "--trust-pickle"]) == 0
    assert any(line.split() == ["trust", "--trust-pickle"] for line in capsys.readouterr().out.splitlines())


def test_unknown_format_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    assert main(["inspect", str(tmp_path / "model.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model format '.h5'" in err and ".pt2" in err
