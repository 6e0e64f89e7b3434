"""MLflow's scoring-server protocol on POST /invocations: every request format, errors, and a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

from e2e.server import serve
from modelapi.http.app import create_app
from modelapi.models.registry import load_model
from modelapi.settings import Settings
from toymodels import IrisClassifier, Regressor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

X = pd.DataFrame({"length": [0.5, -1.2, 2.0, 0.1, -0.3, 1.1], "weight": [1.0, 0.3, -2.0, 0.2, -0.9, 0.4]})
Y = np.array([1, 0, 0, 1, 0, 1])
ROWS = X.iloc[:3]


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow") / "shapes"
    est = LogisticRegression().fit(X, Y)
    mlflow.sklearn.save_model(
        est, path, signature=infer_signature(X, est.predict(X)), input_example=X.iloc[:2], pip_requirements=[]
    )
    return path


@pytest.fixture(scope="module")
def expected(mlflow_dir: Path) -> list[Any]:
    """What MLflow itself predicts for ROWS, in process."""
    return list(mlflow.pyfunc.load_model(str(mlflow_dir)).predict(ROWS).tolist())


@pytest.fixture
def client(mlflow_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app([load_model(mlflow_dir)], Settings(job_workers=0)), raise_server_exceptions=False) as c:
        yield c


BODIES = {
    "dataframe_split": {"dataframe_split": ROWS.to_dict(orient="split", index=False)},
    "dataframe_split without columns": {"dataframe_split": {"data": ROWS.to_numpy().tolist()}},
    "dataframe_records": {"dataframe_records": ROWS.to_dict(orient="records")},
    "instances records": {"instances": ROWS.to_dict(orient="records")},
    "instances rows": {"instances": ROWS.to_numpy().tolist()},
    "inputs columns": {"inputs": ROWS.to_dict(orient="list"), "params": {}},
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_every_request_format_answers_as_mlflow(client: TestClient, body: dict[str, Any], expected: list[Any]) -> None:
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    named = client.post("/models/shapes/invocations", json=body)
    assert named.json() == {"predictions": expected}


def test_csv_body(client: TestClient, expected: list[Any]) -> None:
    csv = ROWS.to_csv(index=False)
    response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


ERRORS = {
    "no format key": ({"rows": []}, '"dataframe_split"'),
    "two format keys": ({"instances": [], "inputs": []}, "exactly one"),
    "unknown column": ({"dataframe_records": [{"length": 1.0, "height": 2.0}]}, "'height'"),
    "missing column": ({"dataframe_split": {"columns": ["length"], "data": [[1.0]]}}, "'weight'"),
    "wrong type": ({"dataframe_records": [{"length": 1.0, "weight": "heavy"}]}, "'weight'"),
    "ragged row": ({"dataframe_split": {"columns": ["length", "weight"], "data": [[1.0]]}}, "row 0"),
    "not an object": ([1, 2], "JSON object"),
}


@pytest.mark.parametrize(("body", "needle"), ERRORS.values(), ids=ERRORS.keys())
def test_client_mistakes_are_400_naming_the_field(client: TestClient, body: Any, needle: str) -> None:
    response = client.post("/invocations", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["detail"]


def test_other_content_types_and_health(client: TestClient) -> None:
    assert client.post("/invocations", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.get("/ping").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}


def test_several_models_need_the_named_route() -> None:
    app = create_app([IrisClassifier(), Regressor()], Settings(job_workers=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/invocations", json={"dataframe_records": [{"a": 1.0, "b": 2.0}]})
        assert response.status_code == 404 and "/models/{name}/invocations" in response.json()["detail"]
        named = client.post("/models/regressor/invocations", json={"dataframe_records": [{"a": 1.0, "b": 2.0}]})
        assert named.json() == {"predictions": [0.0]}
        iris = client.post("/models/iris/invocations", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert iris.json() == {"predictions": ["setosa"]}


@pytest.fixture(scope="module")
def booster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LightGBM Booster saved by MLflow: its pyfunc answers P(class 1), not a label."""
    import lightgbm as lgb
    import mlflow.lightgbm

    path = tmp_path_factory.mktemp("mlflow") / "booster"
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 1, "min_data_in_bin": 1}
    booster = lgb.train(params, lgb.Dataset(X, Y), num_boost_round=3)
    signature = infer_signature(X, booster.predict(X))
    mlflow.lightgbm.save_model(booster, path, signature=signature, input_example=X.iloc[:2], pip_requirements=[])
    return path


def test_mlflow_client_request_against_the_real_server(tmp_path: Path, booster_dir: Path) -> None:
    """Requests as a client of ``mlflow models serve`` sends them, MLflow's own serving example among them."""
    expected = mlflow.pyfunc.load_model(str(booster_dir)).predict(ROWS).tolist()
    example = json.loads((booster_dir / "serving_input_example.json").read_text())
    with serve(str(booster_dir), tmp_dir=tmp_path) as server, httpx.Client(base_url=server.url) as http:
        response = http.post("/invocations", json={"dataframe_split": ROWS.to_dict(orient="split", index=False)})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
        from_example = http.post("/invocations", json=example)
        assert from_example.status_code == 200 and len(from_example.json()["predictions"]) == 2
        bad = http.post("/invocations", json={"dataframe_records": [{"length": "long", "weight": 1.0}]})
        assert bad.status_code == 400 and "'length'" in bad.json()["detail"]
        assert http.get("/ping").status_code == 200
