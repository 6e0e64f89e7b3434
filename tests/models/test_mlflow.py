"""MLflow model directories: native flavours through modelapi's loaders, pyfunc through mlflow, with trust."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.lightgbm
import mlflow.onnx
import mlflow.pyfunc
import mlflow.sklearn
import mlflow.xgboost
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from served import friendly, probabilities, serving, v2
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from modelapi.errors import ModelLoadError, UntrustedModel
from modelapi.models.registry import load_model
from modelapi.models.trust import Trust

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.RandomState(4)
    X = pd.DataFrame({"length": rng.normal(size=60), "weight": rng.normal(size=60)})
    y = (X["length"] + X["weight"] > 0).astype(np.int64).to_numpy()
    return X, y


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> pd.DataFrame:
        return pd.DataFrame({"double": model_input["length"] * 2, "sum": model_input["length"] + model_input["weight"]})


def test_sklearn_flavour_uses_the_native_loader_and_the_signature(
    tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = frame
    est = LogisticRegression().fit(X, y)
    path = tmp_path / "skl"
    sig = infer_signature(X, est.predict(X))
    mlflow.sklearn.save_model(est, path, signature=sig, input_example=X.iloc[:2], pip_requirements=[])
    model = load_model(path)
    assert model.name == "skl" and model.platform == "mlflow"
    assert model.info["flavor"].startswith("sklearn") and model.info["trust"].startswith("not needed")
    assert [(s.name, s.datatype, s.example) for s in model.signature.inputs] == [
        ("length", "FP64", X.iloc[0, 0]),
        ("weight", "FP64", X.iloc[0, 1]),
    ]
    rows = X.iloc[:5]
    inputs = {c: rows[c].to_numpy() for c in X.columns}
    with serving(model) as client:
        answer = friendly(client, "skl", inputs)
        outputs = v2(client, "skl", inputs)
        metadata = client.get("/models/skl").json()
        wrong = client.post("/models/skl/predict", json={"length": 1.0, "weight": "heavy"})
    pyfunc = mlflow.pyfunc.load_model(str(path))
    assert [r["prediction"] for r in answer] == pyfunc.predict(rows).tolist() == est.predict(rows).tolist()
    np.testing.assert_array_equal(probabilities(answer, [0, 1]), est.predict_proba(rows))
    np.testing.assert_array_equal(outputs["label"], est.predict(rows))
    assert metadata["example"]["request"] == {"length": X.iloc[0, 0], "weight": X.iloc[0, 1]}
    assert wrong.status_code == 400 and "'weight'" in wrong.json()["detail"]


def test_xgboost_and_lightgbm_flavours(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    X, y = frame
    xgb_clf = xgb.XGBClassifier(n_estimators=4, max_depth=2).fit(X, y)
    mlflow.xgboost.save_model(xgb_clf, tmp_path / "xgb", signature=infer_signature(X, y), pip_requirements=[])
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(X, y), 4)
    mlflow.lightgbm.save_model(booster, tmp_path / "lgb", signature=infer_signature(X, y), pip_requirements=[])
    rows = X.iloc[:6]
    inputs = {c: rows[c].to_numpy() for c in X.columns}
    xgb_model, lgb_model = load_model(tmp_path / "xgb"), load_model(tmp_path / "lgb")
    assert xgb_model.info["flavor"].startswith("xgboost") and lgb_model.info["flavor"].startswith("lightgbm")
    with serving(xgb_model) as client:
        xgb_out = v2(client, "xgb", inputs)
    with serving(lgb_model) as client:
        lgb_out = v2(client, "lgb", inputs)
    np.testing.assert_array_equal(xgb_out["probabilities"], xgb_clf.predict_proba(rows))
    np.testing.assert_array_equal(xgb_out["label"], xgb_clf.predict(rows))
    np.testing.assert_array_equal(lgb_out["probabilities"][:, 1], booster.predict(rows))


def test_onnx_flavour_with_a_tensor_signature(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = frame
    matrix = X.to_numpy(dtype=np.float32)
    est = LogisticRegression().fit(matrix, y)
    proto = to_onnx(est, matrix[:1], options={"zipmap": False}, target_opset=17)
    mlflow.onnx.save_model(proto, tmp_path / "onx", signature=infer_signature(matrix, y), pip_requirements=[])
    model = load_model(tmp_path / "onx")
    assert [(s.name, s.datatype, s.shape) for s in model.signature.inputs] == [("input", "FP32", (-1, 2))]
    with serving(model) as client:
        outputs = v2(client, "onx", {"input": matrix[:5]})
    np.testing.assert_array_equal(outputs["label"], est.predict(matrix[:5]))


def test_pyfunc_needs_trust_and_answers_as_mlflow(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, _ = frame
    path = tmp_path / "pyf"
    out = Doubler().predict(None, X)
    mlflow.pyfunc.save_model(path, python_model=Doubler(), signature=infer_signature(X, out), pip_requirements=[])
    with pytest.raises(UntrustedModel, match="--sha256"):
        load_model(path)
    model = load_model(path, trust=Trust(trust_pickle=True))
    assert model.signature.output_names == ["double", "sum"]
    rows = X.iloc[:4]
    inputs = {c: rows[c].to_numpy() for c in X.columns}
    expected = mlflow.pyfunc.load_model(str(path)).predict(rows)
    with serving(model) as client:
        outputs = v2(client, "pyf", inputs)
    np.testing.assert_array_equal(outputs["double"], expected["double"].to_numpy())
    np.testing.assert_array_equal(outputs["sum"], expected["sum"].to_numpy())


def test_pickled_sklearn_flavour_needs_trust(tmp_path: Path, frame: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = frame
    path = tmp_path / "pickled"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(X, y), path, serialization_format="cloudpickle", pip_requirements=[]
    )
    with pytest.raises(UntrustedModel):
        load_model(path)
    assert load_model(path, trust=Trust(trust_pickle=True)).info["trust"] == "--trust-pickle"


def test_pyfunc_without_signature_and_broken_mlmodel(tmp_path: Path) -> None:
    mlflow.pyfunc.save_model(tmp_path / "nosig", python_model=Doubler(), pip_requirements=[])
    with pytest.raises(ModelLoadError, match="no signature"):
        load_model(tmp_path / "nosig", trust=Trust(trust_pickle=True))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ModelLoadError, match="names no flavors"):
        load_model(broken)


def test_missing_yaml_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'modelapi\[mlflow\]'"):
        load_model(tmp_path)
