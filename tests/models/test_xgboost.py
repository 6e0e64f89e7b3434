"""XGBoost loader: models trained here, saved natively, served; answers equal XGBoost's own predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from served import friendly, probabilities, serving, v2

from modelapi.errors import ModelLoadError
from modelapi.models.registry import load_model


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.RandomState(0)
    X = pd.DataFrame(
        {"age": rng.uniform(18, 80, 80).round(1), "score": rng.normal(size=80), "visits": rng.randint(0, 9, 80)}
    )
    y = ((X["age"] > 45).astype(int) + (X["score"] > 0.5).astype(int)).to_numpy()
    return X, y


def test_sklearn_classifier_json_named_features(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(X, y)
    clf.save_model(tmp_path / "churn.json")
    model = load_model(tmp_path / "churn.json")
    sig = model.signature
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [
        ("age", "FP64", (-1,)),
        ("score", "FP64", (-1,)),
        ("visits", "INT64", (-1,)),
    ]
    assert [(s.name, s.datatype, s.labels) for s in sig.outputs] == [
        ("label", "INT64", None),
        ("probabilities", "FP32", (0, 1, 2)),
    ]
    assert model.platform == "xgboost" and model.info["objective"] == "multi:softprob"
    rows = X.iloc[:7]
    inputs = {c: rows[c].to_numpy() for c in X.columns}
    with serving(model) as client:
        answer = friendly(client, "churn", inputs)
        outputs = v2(client, "churn", inputs)
    assert [r["prediction"] for r in answer] == clf.predict(rows).tolist()
    np.testing.assert_array_equal(probabilities(answer, [0, 1, 2]), clf.predict_proba(rows))
    np.testing.assert_array_equal(outputs["label"], clf.predict(rows))
    np.testing.assert_array_equal(outputs["probabilities"], clf.predict_proba(rows))


def test_binary_booster_ubj_unnamed_matrix(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    matrix = X.to_numpy(dtype=np.float64)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(matrix, label=y > 0), 4)
    booster.save_model(tmp_path / "bin.ubj")
    model = load_model(tmp_path / "bin.ubj")
    assert [(s.name, s.shape) for s in model.signature.inputs] == [("input", (-1, 3))]
    expected = booster.predict(xgb.DMatrix(matrix[:5]))
    with serving(model) as client:
        answer = friendly(client, "bin", {"input": matrix[:5]})
        outputs = v2(client, "bin", {"input": matrix[:5]})
    np.testing.assert_array_equal(probabilities(answer, [0, 1])[:, 1], expected)
    np.testing.assert_array_equal(outputs["probabilities"][:, 1], expected)
    assert outputs["label"].tolist() == (expected > 0.5).astype(int).tolist()


def test_regressor_and_missing_values(tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, _ = data
    target = X["age"] * 0.1 + X["score"]
    reg = xgb.XGBRegressor(n_estimators=5).fit(X[["age", "score"]], target)
    reg.save_model(tmp_path / "reg.json")
    model = load_model(tmp_path / "reg.json")
    assert model.signature.output_names == ["prediction"]
    rows = X[["age", "score"]].iloc[:4].copy()
    rows.iloc[1, 1] = np.nan  # XGBoost treats NaN as missing; JSON sends it as null
    with serving(model) as client:
        body = [{"age": a, "score": None if np.isnan(s) else s} for a, s in rows.to_numpy()]
        response = client.post("/models/reg/predict", json=body)
        assert response.status_code == 200, response.text
        got = [r["prediction"] for r in response.json()["predictions"]]
        bad = client.post("/models/reg/predict", json={"age": "old", "score": 1.0})
        missing = client.post(
            "/v2/models/reg/infer", json={"inputs": [{"name": "age", "datatype": "FP64", "shape": [1], "data": [1.0]}]}
        )
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), reg.predict(rows))
    assert bad.status_code == 400 and "age" in bad.json()["detail"]
    assert missing.status_code == 400 and "score" in missing.json()["error"]


def test_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"not": "a model"}')
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    assert "XGBoost" in str(err.value) and "\n" not in str(err.value)


def test_missing_extra_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.json"
    path.write_text("{}")
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'modelapi\[xgboost\]'"):
        load_model(path)
