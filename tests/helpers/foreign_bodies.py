"""Request bodies written for other model servers, exactly as their documentation gives them, with where each
comes from. Tests send them unchanged (tests/e2e/test_foreign_bodies.py over REST; the gRPC tests can reuse the
V2 ones) to models trained like the ones those documents serve.

Sources, at the commits read:

- KServe, github.com/kserve/kserve @ aaac4e294dae2c7b1aa1886447793f3aa1c30912 (``docs/samples/v1beta1/...``,
  ``test/e2e/data/...``), and its documentation site, github.com/kserve/website @
  05b83a6cf9d6c4045a83d79eb8d0029605d655e7 (``docs/model-serving/predictive-inference/frameworks/...``);
- MLServer, github.com/SeldonIO/MLServer @ a325e523b5a580d49aeb06e19e73e4a90176b63b;
- TensorFlow Serving, github.com/tensorflow/serving @ 9d981c5c2708d23c5407c7c1e30309e6f9798874
  (``tensorflow_serving/g3doc/api_rest.md``).

Each ``ForeignBody`` names the model it is for (``model``, a key of ``MODELS`` below, which says how the tests
train it) and what a correct answer holds (``expect``: the class index or value per row, for the prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ForeignBody:
    id: str
    source: str  # repository path (or document) the body is copied from
    protocol: str  # "v1": POST /v1/models/{model}:predict; "v2": POST /v2/models/{model}/infer
    model: str
    body: dict[str, Any]
    expect: list[Any] = field(default_factory=list)  # the prediction per row ([] : only that it answers)
    outputs: tuple[str, ...] = ()  # V2: the output names the answer must carry (those the body asks for)


#: the models the bodies are written for, as the documents train them (the tests train them the same way)
MODELS = {
    "sklearn-iris": "scikit-learn SVC on the iris arrays (no feature names), as KServe's sklearn sample",
    "sklearn-iris-named": "the same SVC fitted on a DataFrame with iris' feature names: one input per feature",
    "xgboost-iris": "XGBClassifier on the iris arrays, saved as a Booster (KServe's xgboost sample)",
    "lightgbm-iris": "lightgbm.train on an iris DataFrame (features 'sepal_length_(cm)'...), KServe's lightgbm sample",
    "mnist-svm": "SVC(gamma=0.001) on the first half of the digits, as MLServer's sklearn example",
    "my-model": "a classifier of two integer features (MLServer's sklearn runtime README)",
    "house": "a pipeline over KServe's mixed-type house features (strings one-hot encoded, integers as they are)",
    "half_plus_three": "x / 2 + 3 (TensorFlow Serving's saved_model_half_plus_three)",
}

_IRIS_V2 = {
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]],
        }
    ]
}

#: MLServer's example request: ``X_test[0:1]`` of the digits (the 899th image; the example says it is an 8), as
#: ``x_0.tolist()`` writes it; docs/examples/sklearn/inference-request.json holds the same 64 numbers
_DIGIT = [
    0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0,
    0.0, 8.0, 16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0,
    0.0, 0.0, 2.0, 12.0, 16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0,
    0.0, 0.0, 0.0, 16.0, 16.0, 16.0, 7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0,
]  # fmt: skip

_HOUSE = {
    "MSZoning": "RL",
    "LotArea": 8450,
    "LotShape": "Reg",
    "Utilities": "AllPub",
    "YrSold": 2008,
    "Neighborhood": "CollgCr",
    "OverallQual": 7,
    "YearBuilt": 2003,
    "SaleType": "WD",
    "GarageArea": 548,
}


def _tensor(name: str, value: Any) -> dict[str, Any]:
    datatype = "BYTES" if isinstance(value, str) else "INT32"
    return {"name": name, "shape": [1], "datatype": datatype, "data": [value]}


BODIES: list[ForeignBody] = [
    ForeignBody(
        "kserve-sklearn-v1",
        "kserve: docs/samples/v1beta1/sklearn/v1/iris-input.json",
        "v1",
        "sklearn-iris",
        {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]},
        expect=[1, 1],  # KServe's documented answer: {"predictions": [1, 1]}
    ),
    ForeignBody(
        "kserve-sklearn-v1-named",
        "kserve: docs/samples/v1beta1/sklearn/v1/iris-input.json",
        "v1",
        "sklearn-iris-named",
        {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]},
        expect=[1, 1],
    ),
    ForeignBody(
        "kserve-sklearn-v2",
        "kserve: docs/samples/v1beta1/sklearn/v2/iris-input.json; website: frameworks/sklearn/sklearn.md",
        "v2",
        "sklearn-iris",
        _IRIS_V2,
        expect=[1, 1],
    ),
    ForeignBody(
        "kserve-sklearn-v2-named",
        "kserve: docs/samples/v1beta1/sklearn/v2/iris-input.json",
        "v2",
        "sklearn-iris-named",
        _IRIS_V2,
        expect=[1, 1],
    ),
    ForeignBody(
        "kserve-xgboost-v2",
        "kserve: docs/samples/v1beta1/xgboost/iris-input.json; website: frameworks/xgboost/xgboost.md",
        "v2",
        "xgboost-iris",
        _IRIS_V2,
        expect=[1, 1],
    ),
    ForeignBody(
        "kserve-lightgbm-v1",
        "kserve: docs/samples/v1beta1/lightgbm/iris-input.json; website: frameworks/lightgbm/lightgbm.md",
        "v1",
        "lightgbm-iris",
        {
            "inputs": [
                {
                    "sepal_length_(cm)": [5.1],
                    "sepal_width_(cm)": [3.5],
                    "petal_length_(cm)": [1.4],
                    "petal_width_(cm)": [0.2],
                }
            ]
        },
        expect=[0],
    ),
    ForeignBody(
        "kserve-lightgbm-v2",
        "website: frameworks/lightgbm/lightgbm.md (iris-input-v2.json)",
        "v2",
        "lightgbm-iris",
        _IRIS_V2,
        expect=[1, 1],
    ),
    ForeignBody(
        "kserve-sklearn-mixedtype-v1",
        "kserve: docs/samples/v1beta1/sklearn/v1/sklearn-mixedtype-model/mixedtype-input.json",
        "v1",
        "house",
        {"instances": [_HOUSE]},
    ),
    ForeignBody(
        "kserve-sklearn-mixedtype-v2",
        "kserve: test/e2e/data/sklearn_mixed_v2.json",
        "v2",
        "house",
        {"parameters": {"content_type": "pd"}, "inputs": [_tensor(k, v) for k, v in _HOUSE.items()]},
    ),
    ForeignBody(
        "mlserver-sklearn-example",
        "mlserver: docs/examples/sklearn/README.md (the request built from x_0 = X_test[0:1])",
        "v2",
        "mnist-svm",
        {"inputs": [{"name": "predict", "shape": [1, 64], "datatype": "FP32", "data": [_DIGIT]}]},
        expect=[8],
    ),
    ForeignBody(
        "mlserver-sklearn-outputs",
        "mlserver: runtimes/sklearn/README.md (Model Outputs)",
        "v2",
        "my-model",
        {
            "inputs": [{"name": "my-input", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "predict_proba"}],
        },
        outputs=("predict_proba",),
    ),
    ForeignBody(
        "tfserving-predict",
        "tensorflow/serving: tensorflow_serving/g3doc/api_rest.md (saved_model_half_plus_three)",
        "v1",
        "half_plus_three",
        {"instances": [1.0, 2.0, 5.0]},
        expect=[3.5, 4.0, 5.5],  # the documented answer
    ),
    ForeignBody(
        "tfserving-signature-name",
        "tensorflow/serving: api_rest.md's predict request format, with its optional signature_name",
        "v1",
        "half_plus_three",
        {"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]},
        expect=[3.5, 4.0, 5.5],
    ),
]


def bodies(protocol: str | None = None) -> list[ForeignBody]:
    """The bodies, or those of one protocol (``"v1"``, ``"v2"``)."""
    return [b for b in BODIES if protocol is None or b.protocol == protocol]
