"""Requests written for KServe, MLServer and TensorFlow Serving, sent unchanged to the real server: over REST, and
the V2 ones over gRPC too (``--grpc-port``, the same server), typed and raw, as a gRPC client sends them.

The bodies are copied from those projects' documentation (tests/helpers/foreign_bodies.py says where from); the
models are trained here the way those documents train theirs: scikit-learn on the iris arrays and on an iris
DataFrame, XGBoost and LightGBM on iris, an SVC on the digits, a two-feature classifier, a mixed-type pipeline,
and TensorFlow Serving's half_plus_three.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2_grpc

from helpers import v2_grpc
from helpers.foreign_bodies import BODIES, MODELS, ForeignBody, bodies
from helpers.ports import free_port

from .server import serve

LIGHTGBM_FEATURES = ["sepal_length_(cm)", "sepal_width_(cm)", "petal_length_(cm)", "petal_width_(cm)"]


def train(root: Path) -> list[str]:
    """Every model of ``MODELS`` written under ``root``; the ``serve`` arguments that serve them by name."""
    import lightgbm
    import pandas as pd
    import skops.io as sio
    import xgboost
    from sklearn import compose, datasets, linear_model, pipeline, preprocessing, svm

    iris = datasets.load_iris()
    X, y = iris.data, iris.target
    named = pd.DataFrame(X, columns=iris.feature_names)
    sio.dump(svm.SVC(gamma="scale").fit(X, y), root / "sklearn-iris.skops")
    sio.dump(svm.SVC(gamma="scale").fit(named, y), root / "sklearn-iris-named.skops")
    xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y).save_model(root / "xgboost-iris.json")
    lgb_frame = pd.DataFrame(X, columns=LIGHTGBM_FEATURES)
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "min_data_in_leaf": 5}
    booster = lightgbm.train(params, lightgbm.Dataset(lgb_frame, label=y), num_boost_round=20)
    booster.save_model(str(root / "lightgbm-iris.txt"))

    digits = datasets.load_digits()
    half = len(digits.images) - (len(digits.images) + 1) // 2  # train_test_split(test_size=0.5, shuffle=False)
    flat = digits.images.reshape((len(digits.images), -1))
    sio.dump(svm.SVC(gamma=0.001).fit(flat[:half], digits.target[:half]), root / "mnist-svm.skops")

    rng = np.random.RandomState(0)
    pairs = pd.DataFrame({"a": rng.randint(0, 10, 60), "b": rng.randint(0, 10, 60)})
    sio.dump(linear_model.LogisticRegression().fit(pairs, (pairs.a > pairs.b).astype(int)), root / "my-model.skops")

    strings = ["MSZoning", "LotShape", "Utilities", "Neighborhood", "SaleType"]
    n = 40
    house = pd.DataFrame(
        {
            "MSZoning": rng.choice(["RL", "RM", "FV"], n),
            "LotArea": rng.randint(2000, 20000, n),
            "LotShape": rng.choice(["Reg", "IR1"], n),
            "Utilities": rng.choice(["AllPub", "NoSeWa"], n),
            "YrSold": rng.randint(2006, 2011, n),
            "Neighborhood": rng.choice(["CollgCr", "Veenker", "Crawfor"], n),
            "OverallQual": rng.randint(1, 11, n),
            "YearBuilt": rng.randint(1900, 2010, n),
            "SaleType": rng.choice(["WD", "New"], n),
            "GarageArea": rng.randint(0, 900, n),
        }
    )
    for column in strings:
        house[column] = house[column].astype(object)
    price = house.LotArea * 10 + house.OverallQual * 5000 + rng.normal(0, 1000, n)
    encode = compose.ColumnTransformer(
        [("strings", preprocessing.OneHotEncoder(handle_unknown="ignore"), strings)], remainder="passthrough"
    )
    regressor = pipeline.make_pipeline(encode, linear_model.Ridge())
    sio.dump(regressor.fit(house, price), root / "house.skops")

    files = [root / f"{name}{suffix}" for name, suffix in _FILES.items()]
    names = [arg for name in [*_FILES, "half_plus_three"] for arg in ("--name", name)]
    return [*(str(f) for f in files), "toymodels:HalfPlusThree", *names]


_FILES = {
    "sklearn-iris": ".skops",
    "sklearn-iris-named": ".skops",
    "xgboost-iris": ".json",
    "lightgbm-iris": ".txt",
    "mnist-svm": ".skops",
    "my-model": ".skops",
    "house": ".skops",
}


@dataclass
class Foreign:
    url: str
    stub: Any  # a GRPCInferenceServiceStub on the same server's --grpc-port


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Foreign]:
    root = tmp_path_factory.mktemp("foreign")
    port = free_port()
    with (
        serve(*train(root), "--grpc-port", str(port), tmp_dir=root, timeout=180) as server,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield Foreign(server.url, service_pb2_grpc.GRPCInferenceServiceStub(channel))


@pytest.fixture(scope="module")
def server_url(foreign: Foreign) -> str:
    return foreign.url


def post(url: str, body: ForeignBody) -> httpx.Response:
    path = f"/v1/models/{body.model}:predict" if body.protocol == "v1" else f"/v2/models/{body.model}/infer"
    return httpx.post(url + path, json=body.body, timeout=60)


def test_every_model_the_bodies_name_is_trained() -> None:
    assert {b.model for b in BODIES} == set(MODELS) == {*_FILES, "half_plus_three"}


@pytest.mark.parametrize("body", BODIES, ids=[b.id for b in BODIES])
def test_the_documented_body_is_answered(server_url: str, body: ForeignBody) -> None:
    response = post(server_url, body)
    assert response.status_code == 200, f"{body.id} ({body.source}): {response.text}"
    answer = response.json()
    if body.protocol == "v1":
        predictions = answer["predictions"]
        rows = len(body.expect) or len(predictions)
        assert len(predictions) == rows
        if body.expect:
            assert predictions == pytest.approx(body.expect)
        else:
            assert all(isinstance(p, float) and np.isfinite(p) for p in predictions)
        return
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_name"] == body.model
    if body.outputs:
        assert list(outputs) == list(body.outputs)
    prediction = next((outputs[n] for n in ("label", "prediction") if n in outputs), None)
    if body.expect:
        assert prediction is not None and prediction["data"] == pytest.approx(body.expect)
    if "predict_proba" in outputs:
        proba = np.array(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
        assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1.0)
    if not body.expect and not body.outputs:
        assert prediction is not None and np.isfinite(prediction["data"]).all()


def v2_error(url: str, model: str, inputs: list[dict[str, Any]]) -> str:
    response = httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 400, response.text
    message: str = response.json()["error"]
    return message


_NARROW = {"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [[6.8, 2.8, 4.8]]}
#: foreign tensors that do not fit: (model, inputs, how the refusal begins, what else it must say)
MISFITS = [
    (
        "sklearn-iris-named",
        [_NARROW],
        "input 'input-0': shape [1, 3] does not fit",
        "this model takes 4 inputs: 'sepal length (cm)' FP64 [-1], 'sepal width (cm)' FP64 [-1]",
    ),
    (
        "lightgbm-iris",
        [{"name": "input-0", "shape": [1, 4], "datatype": "BYTES", "data": [["a", "b", "c", "d"]]}],
        "input 'input-0' column 0 ('sepal_length_(cm)'): expected a number written as text",
        "",
    ),
    (
        "mnist-svm",
        [{**_NARROW, "name": "predict"}],
        "input 'predict', taken as 'input': expected shape [-1, 64]",
        "this model takes 1 input: 'input' FP64 [-1, 64]",
    ),
]


@pytest.mark.parametrize(("model", "inputs", "begins", "says"), MISFITS, ids=[m[0] for m in MISFITS])
def test_a_foreign_tensor_that_does_not_fit_is_a_400_naming_the_expected_inputs(
    server_url: str, model: str, inputs: list[dict[str, Any]], begins: str, says: str
) -> None:
    message = v2_error(server_url, model, inputs)
    assert message.startswith(begins) and says in message


# gRPC: the same V2 bodies as ModelInferRequests, typed and raw --------------------------------------------------


def _plain(array: np.ndarray) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("body", bodies("v2"), ids=[b.id for b in bodies("v2")])
def test_the_documented_v2_body_is_answered_over_grpc(foreign: Foreign, body: ForeignBody, raw: bool) -> None:
    """The same predictions as over REST, in the form the request was sent in."""
    request = v2_grpc.model_infer_request(body.body, body.model, raw=raw)
    answer = foreign.stub.ModelInfer(request, timeout=60)
    assert answer.model_name == body.model
    assert bool(answer.raw_output_contents) is raw
    outputs = v2_grpc.outputs(answer)
    over_rest = post(foreign.url, body).json()["outputs"]
    assert list(outputs) == [o["name"] for o in over_rest]
    if body.outputs:
        assert list(outputs) == list(body.outputs)
    for rest in over_rest:
        got = outputs[rest["name"]]
        assert list(got.shape) == rest["shape"]
        if rest["datatype"] == "BYTES":
            assert _plain(got) == rest["data"]
        else:
            np.testing.assert_allclose(got.ravel().astype(float), np.array(rest["data"], dtype=float))
    prediction = next((outputs[n] for n in ("label", "prediction") if n in outputs), None)
    if body.expect:
        assert prediction is not None and _plain(prediction) == pytest.approx(body.expect)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize(("model", "inputs", "begins", "says"), MISFITS, ids=[m[0] for m in MISFITS])
def test_a_foreign_tensor_that_does_not_fit_is_invalid_argument_over_grpc_with_the_rest_message(
    foreign: Foreign, model: str, inputs: list[dict[str, Any]], begins: str, says: str, raw: bool
) -> None:
    request = v2_grpc.model_infer_request({"inputs": inputs}, model, raw=raw)
    with pytest.raises(grpc.RpcError) as caught:
        foreign.stub.ModelInfer(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == v2_error(foreign.url, model, inputs)
    assert caught.value.details().startswith(begins) and says in caught.value.details()
