"""LightGBM loader: models trained here, saved as text, served; answers equal LightGBM's own predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from served import friendly, probabilities, serving, v2

from modelapi.errors import ModelLoadError
from modelapi.models.registry import load_model


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.RandomState(2)
    X = pd.DataFrame({"width": rng.normal(size=90), "height": rng.normal(size=90), "depth": rng.uniform(0, 5, 90)})
    y = (X["width"] > 0).astype(int).to_numpy() + (X["depth"] > 3).astype(int).to_numpy()
    return X, y


def test_multiclass_classifier_named_features(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    clf = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, y)
    clf.booster_.save_model(tmp_path / "boxes.txt")
    model = load_model(tmp_path / "boxes.txt")
    sig = model.signature
    assert sig.input_names == ["width", "height", "depth"]
    assert [(s.name, s.datatype, s.labels) for s in sig.outputs] == [
        ("label", "INT64", None),
        ("probabilities", "FP64", (0, 1, 2)),
    ]
    assert model.platform == "lightgbm" and model.info["objective"].startswith("multiclass")
    rows = X.iloc[:6]
    inputs = {c: rows[c].to_numpy() for c in X.columns}
    with serving(model) as client:
        answer = friendly(client, "boxes", inputs)
        outputs = v2(client, "boxes", inputs)
    assert [r["prediction"] for r in answer] == clf.predict(rows).tolist()
    np.testing.assert_array_equal(probabilities(answer, [0, 1, 2]), clf.predict_proba(rows))
    np.testing.assert_array_equal(outputs["label"], clf.predict(rows))
    np.testing.assert_array_equal(outputs["probabilities"], clf.predict_proba(rows))


def test_binary_booster_unnamed_features(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    matrix = X.to_numpy()
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(matrix, label=(y > 0).astype(int)), num_boost_round=4)
    booster.save_model(tmp_path / "bin.lgb")
    model = load_model(tmp_path / "bin.lgb")
    assert [(s.name, s.shape) for s in model.signature.inputs] == [("input", (-1, 3))]
    expected = booster.predict(matrix[:5])
    with serving(model) as client:
        outputs = v2(client, "bin", {"input": matrix[:5]})
        answer = friendly(client, "bin", {"input": matrix[:5]})
        short = client.post("/models/bin/predict", json={"input": [1.0, 2.0]})
    np.testing.assert_array_equal(outputs["probabilities"][:, 1], expected)
    np.testing.assert_array_equal(probabilities(answer, [0, 1])[:, 1], expected)
    assert short.status_code == 400 and "input" in short.json()["detail"]


def test_regression_objective(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, _ = data
    reg = lgb.LGBMRegressor(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1)
    reg.fit(X, X["width"] * 2 + X["depth"])
    reg.booster_.save_model(tmp_path / "reg.txt")
    model = load_model(tmp_path)  # a directory holding one model file
    assert model.name == tmp_path.name and model.signature.output_names == ["prediction"]
    rows = X.iloc[:5]
    with serving(model) as client:
        outputs = v2(client, model.name, {c: rows[c].to_numpy() for c in X.columns})
    np.testing.assert_array_equal(outputs["prediction"], reg.predict(rows))


def test_text_file_that_is_not_a_model(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ModelLoadError, match="not a LightGBM text model"):
        load_model(tmp_path / "notes.txt")
    assert capfd.readouterr().err == ""  # LightGBM's own "[Fatal]" line never reaches the terminal
    with pytest.raises(ModelLoadError, match="no model file"):
        load_model(tmp_path)  # a stray .txt in a directory is not taken for a model


def test_missing_extra_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.lgb").write_text("tree\n")
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'modelapi\[lightgbm\]'"):
        load_model(tmp_path / "m.lgb")
