from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from modelapi.errors import InvalidInput, ModelLoadError, UntrustedModel
from modelapi.models.sklearn import SklearnModel, load_pickle, load_skops
from modelapi.models.trust import Trust


def tabular_pipeline(df: pd.DataFrame, y: np.ndarray, handle_unknown: str = "error") -> Any:
    ct = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age"]),
            ("city", OneHotEncoder(handle_unknown=handle_unknown), ["city"]),
            ("plan", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["plan"]),
        ]
    )
    return make_pipeline(ct, LogisticRegression(random_state=0)).fit(df, y)


def as_request(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """What a codec hands over: plain lists turned into arrays, no DataFrame dtypes."""
    return {c: np.asarray(df[c].tolist()) for c in df.columns}


def test_skops_dataframe_pipeline_signature_and_predictions(tmp_path: Path, frame: Any) -> None:
    df, y = frame
    est = tabular_pipeline(df, y)
    path = tmp_path / "churn.skops"
    sio.dump(est, path)
    model = load_skops(path)

    sig = model.signature
    assert [(s.name, s.datatype, s.shape) for s in sig.inputs] == [
        ("age", "FP64", (-1,)),
        ("city", "BYTES", (-1,)),
        ("plan", "INT64", (-1,)),
    ]
    assert sig.input("city").description == "one of 'lyon', 'nice', 'paris'"
    # the known categories, as plain values in the metadata (the playground's select), none for a number
    assert sig.input("city").categories == ("lyon", "nice", "paris")
    assert sig.input("city").to_dict()["categories"] == ["lyon", "nice", "paris"]
    assert sig.input("plan").to_dict()["categories"] == [1, 2, 3]
    assert sig.input("age").categories is None and "categories" not in sig.input("age").to_dict()
    label, proba = sig.outputs
    assert (label.name, label.datatype, label.shape) == ("label", "BYTES", (-1,))
    assert (proba.name, proba.datatype, proba.shape, proba.labels) == ("probabilities", "FP64", (-1, 2), ("no", "yes"))
    assert model.platform == "sklearn"
    assert model.info["format"] == "skops"
    assert model.info["estimator"] == "Pipeline(ColumnTransformer, LogisticRegression)"

    inputs = sig.validate(as_request(df.head(7)))
    out = model.predict(inputs)
    np.testing.assert_array_equal(out["label"], est.predict(df.head(7)))
    np.testing.assert_array_equal(out["probabilities"], est.predict_proba(df.head(7)))


def test_unknown_category_is_the_clients_mistake(frame: Any) -> None:
    df, y = frame
    model = SklearnModel(tabular_pipeline(df, y))
    request = as_request(df.head(3))
    request["city"] = np.array(["paris", "rome", "nice"], dtype=object)
    with pytest.raises(InvalidInput, match=r"input 'city': unknown category 'rome' at index 1; expected one of") as e:
        model.predict(model.signature.validate(request))
    assert e.value.field == "city"


def test_unknown_category_passes_when_the_encoder_ignores_it(frame: Any) -> None:
    df, y = frame
    est = tabular_pipeline(df, y, handle_unknown="ignore")
    model = SklearnModel(est)
    request = as_request(df.head(2))
    request["city"] = np.array([b"rome", b"nice"], dtype=object)  # bytes, as the binary protocol sends them
    out = model.predict(model.signature.validate(request))
    expected = df.head(2).assign(city=["rome", "nice"])
    np.testing.assert_array_equal(out["probabilities"], est.predict_proba(expected))


@pytest.mark.parametrize(
    "city_columns",
    [["city"], [1], np.array([False, True, False]), make_column_selector(pattern="^city$")],
    ids=["names", "indices", "mask", "selector"],
)
def test_encoder_columns_found_however_they_are_named(frame: Any, city_columns: Any) -> None:
    df, y = frame
    ct = ColumnTransformer([("city", OneHotEncoder(), city_columns)], remainder="passthrough")
    est = make_pipeline(ct, LogisticRegression()).fit(df, y.astype(str))  # numpy str labels, not object
    model = SklearnModel(est)
    assert [s.datatype for s in model.signature.inputs] == ["FP64", "BYTES", "FP64"]
    out = model.predict(model.signature.validate(as_request(df.head(4))))
    assert out["label"].dtype == object
    np.testing.assert_array_equal(out["label"], est.predict(df.head(4)))


def test_numpy_model_takes_one_input_array(arrays: Any) -> None:
    X, y = arrays
    est = LogisticRegression().fit(X, y)
    model = SklearnModel(est)
    (spec,) = model.signature.inputs
    assert (spec.name, spec.datatype, spec.shape) == ("input", "FP64", (-1, 3))
    label, proba = model.signature.outputs
    assert label.datatype == "INT64"
    assert proba.labels == (0, 1, 2)
    assert all(type(v) is int for v in proba.labels)
    out = model.predict(model.signature.validate({"input": np.asarray(X[:5].tolist())}))
    np.testing.assert_array_equal(out["label"], est.predict(X[:5]))
    np.testing.assert_array_equal(out["probabilities"], est.predict_proba(X[:5]))


def test_regressors_answer_prediction(arrays: Any) -> None:
    X, _ = arrays
    single = SklearnModel(Ridge().fit(X, X[:, 0] * 2))
    assert [(s.name, s.datatype, s.shape) for s in single.signature.outputs] == [("prediction", "FP64", (-1,))]
    np.testing.assert_array_equal(single.predict({"input": X})["prediction"], single.estimator.predict(X))

    multi = SklearnModel(LinearRegression().fit(X, X[:, :2]))
    assert multi.signature.outputs[0].shape == (-1, 2)
    np.testing.assert_array_equal(multi.predict({"input": X})["prediction"], multi.estimator.predict(X))


def test_nan_allowed_only_where_the_estimator_takes_it(arrays: Any, frame: Any) -> None:
    X, y = arrays

    def nan_ok(est: Any) -> bool:
        return SklearnModel(est.fit(X, y)).signature.inputs[0].allow_nonfinite

    assert not nan_ok(make_pipeline(StandardScaler(), LogisticRegression()))
    assert nan_ok(make_pipeline(SimpleImputer(), LogisticRegression()))
    assert nan_ok(HistGradientBoostingClassifier(max_iter=3))
    df, yy = frame
    sig = SklearnModel(tabular_pipeline(df, yy)).signature
    assert not sig.input("age").allow_nonfinite  # StandardScaler passes NaN on to LogisticRegression
    assert sig.input("plan").allow_nonfinite  # imputed first


class Custom(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, X: Any, y: Any) -> Custom:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.classes_[0])


def test_skops_untrusted_types_are_refused_by_name(tmp_path: Path, arrays: Any) -> None:
    X, y = arrays
    path = tmp_path / "custom.skops"
    sio.dump(make_pipeline(StandardScaler(), Custom()).fit(X, y), path)
    with pytest.raises(UntrustedModel) as info:
        load_skops(path)
    msg = str(info.value)
    assert f"{Custom.__module__}.Custom" in msg
    assert "sklearn.preprocessing" not in msg  # trusted types are not listed


def test_corrupt_skops_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.skops"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match=r"cannot read .* as a skops file"):
        load_skops(path)


@pytest.fixture
def pickled(tmp_path: Path, arrays: Any) -> tuple[Path, str, Any]:
    X, y = arrays
    est = LogisticRegression().fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path, compress=3)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), est


def test_pickle_refused_without_trust(pickled: Any) -> None:
    path, digest, _ = pickled
    with pytest.raises(UntrustedModel) as info:
        load_pickle(path, Trust())
    msg = str(info.value)
    assert digest in msg and "--trust-pickle" in msg and f"--sha256 {digest}" in msg


def test_pickle_loads_when_pinned_or_trusted(pickled: Any, arrays: Any) -> None:
    path, digest, est = pickled
    X, _ = arrays
    pinned = load_pickle(path, Trust(sha256=frozenset({digest})))
    assert pinned.info["sha256"] == digest and pinned.info["trust"] == "pinned sha256"
    assert pinned.info["format"] == "joblib"
    np.testing.assert_array_equal(pinned.predict({"input": X})["probabilities"], est.predict_proba(X))
    assert load_pickle(path, Trust(trust_pickle=True)).info["trust"] == "--trust-pickle"
    with pytest.raises(UntrustedModel, match="matches none"):
        load_pickle(path, Trust(sha256=frozenset({"a" * 64})))


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("trust", [Trust(), Trust(sha256=frozenset({"b" * 64}))])
def test_malicious_pickle_never_runs(tmp_path: Path, trust: Trust) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    joblib.dump(Exploit(marker), path)
    with pytest.raises(UntrustedModel):
        load_pickle(path, trust)
    assert not marker.exists()
    # the same file does run code once trusted: the refusal above is what kept the marker away
    with pytest.raises(ModelLoadError, match="not a scikit-learn estimator"):
        load_pickle(path, Trust(trust_pickle=True))
    assert marker.exists()


def test_unfitted_estimator_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.pkl"
    joblib.dump(LogisticRegression(), path)
    with pytest.raises(ModelLoadError, match="not fitted"):
        load_pickle(path, Trust(trust_pickle=True))


def test_estimator_without_predict_is_refused(arrays: Any) -> None:
    with pytest.raises(ModelLoadError, match="no predict method"):
        SklearnModel(StandardScaler().fit(arrays[0]))


def test_loading_a_skops_file_does_not_import_torch() -> None:
    """skops's import walks every sklearn package; modelapi keeps that walk from importing PyTorch."""
    import subprocess
    import sys

    code = (
        "import sys; from modelapi.demo import DEMO_MODEL_PATH; from modelapi.models.registry import load_model; "
        "load_model(DEMO_MODEL_PATH); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
