"""The friendly JSON API, KServe V1 and the listing routes, over HTTP in-process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from toymodels import IRIS_FEATURES, IRIS_LABELS

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem answer with the request id, and return its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["instance"] == r.request.url.path
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return body


# the friendly API -----------------------------------------------------------------------------------------
def test_single_record(client: TestClient) -> None:
    r = client.post("/models/iris/predict", json=ROW)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["prediction"] == "setosa"
    assert list(body["probabilities"]) == list(IRIS_LABELS)
    assert math.isclose(sum(body["probabilities"].values()), 1.0)
    assert body["probabilities"]["setosa"] > 0.9


def test_list_of_records(client: TestClient) -> None:
    r = client.post("/models/iris/predict", json=[ROW, VIRGINICA])
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["prediction"] for p in predictions] == ["setosa", "virginica"]
    for p in predictions:
        assert math.isclose(sum(p["probabilities"].values()), 1.0)


def test_predict_for_the_only_model(single_client: TestClient) -> None:
    assert single_client.post("/predict", json=VIRGINICA).json()["prediction"] == "virginica"
    r = single_client.get("/predict", params={**{k: str(v) for k, v in VIRGINICA.items()}, "sepal_width": "-3.3"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"prediction", "probabilities"}
    r = single_client.get("/predict?sepal_length=-1.5&sepal_width=1e-3&petal_length=6&petal_width=+2.5")
    assert r.status_code == 200, r.text


def test_get_with_negative_numbers(client: TestClient) -> None:
    r = client.get("/models/regressor/predict?a=-1.5&b=1e-3")
    assert r.status_code == 200, r.text
    assert r.json() == {"prediction": pytest.approx(-3.001)}


def test_nan_output_is_null(client: TestClient) -> None:
    r = client.post("/models/regressor/predict", json=[{"a": 999, "b": 1}, {"a": 1, "b": 1}])
    assert r.status_code == 200
    assert b"NaN" not in r.content
    assert r.json() == {"predictions": [{"prediction": None}, {"prediction": 1.0}]}


def test_echo_every_datatype(client: TestClient) -> None:
    rec = client.get("/models/echo").json()["example"]["request"]
    r = client.post("/models/echo/predict", json=[rec, {**rec, "int64": -5, "bytes": "é", "fp16": None}])
    assert r.status_code == 200, r.text
    second = r.json()["predictions"][1]
    assert second["int64_out"] == -5
    assert second["bytes_out"] == "é"
    assert second["fp16_out"] is None
    assert second["matrix_out"] == [[0.0] * 3] * 2


def test_predict_is_404_when_several_models_are_served(client: TestClient) -> None:
    for r in (client.post("/predict", json=ROW), client.get("/predict")):
        detail = problem(r, 404)["detail"]
        assert "iris, echo, regressor" in detail
        assert "/models/{name}/predict" in detail


# client mistakes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({k: v for k, v in ROW.items() if k != "petal_width"}, "record 0: missing 'petal_width'"),
        ([ROW, ROW, ROW, {**ROW, "colour": 1}], "record 3: unknown 'colour'"),
        ({**ROW, "sepal_length": "abc"}, "record 0: 'sepal_length' expected a number, got string 'abc'"),
        ({**ROW, "sepal_length": True}, "record 0: 'sepal_length' expected a number, got boolean true"),
        ({**ROW, "sepal_length": None}, "record 0: 'sepal_length' expected a number, got null"),
        ([], "got an empty list"),
        ("text", "expected one record"),
        (42, "expected one record"),
        ([ROW, 1], "record 1: expected an object of named fields"),
    ],
)
def test_bad_records_are_400(client: TestClient, body: Any, expected: str) -> None:
    body_ = problem(client.post("/models/iris/predict", json=body), 400)
    assert expected in body_["detail"]


def test_malformed_json_is_400(client: TestClient) -> None:
    for content in (b"{", b"", b"\xff\xfe", b'{"a": NaN}'):
        r = client.post("/models/iris/predict", content=content, headers={"content-type": "application/json"})
        assert "JSON" in problem(r, 400)["detail"]


def test_deep_nesting_is_400_not_500(client: TestClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for url in ("/models/iris/predict", "/v1/models/iris:predict"):
        assert "JSON" in problem(client.post(url, content=deep), 400)["detail"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/models/iris/predict", content=b"sepal_length=1", headers={"content-type": "text/plain"})
    assert "application/json" in problem(r, 415)["detail"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post("/v1/models/iris:predict", content=b"{}", headers=form)
    problem(r, 415)


def test_huge_body_is_413(client: TestClient) -> None:
    big = b"[" + b",".join([b'{"a": 1, "b": 2}'] * 80_000) + b"]"
    assert len(big) > 1_000_000
    problem(client.post("/models/regressor/predict", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while streaming
        for _ in range(20):
            yield b" " * 100_000

    problem(client.post("/models/regressor/predict", content=chunks()), 413)


def test_too_many_rows_is_413(client: TestClient) -> None:
    detail = problem(client.post("/models/regressor/predict", json=[{"a": 1, "b": 2}] * 1001), 413)["detail"]
    assert "1000" in detail
    assert client.post("/models/regressor/predict", json=[{"a": 1, "b": 2}] * 1000).status_code == 200
    problem(client.post("/v1/models/regressor:predict", json={"instances": [[1, 2]] * 1001}), 413)


def test_unknown_model_is_404(client: TestClient) -> None:
    for r in (
        client.post("/models/nope/predict", json=ROW),
        client.get("/models/nope"),
        client.get("/models/nope/predict?a=1"),
        client.post("/v1/models/nope:predict", json={"instances": [1]}),
        client.get("/v1/models/nope"),
    ):
        assert "no model named 'nope'; served models: iris, echo, regressor" in problem(r, 404)["detail"]


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    cases = {
        ("DELETE", "/models/iris/predict"): {"GET", "HEAD", "POST"},
        ("PUT", "/predict"): {"GET", "HEAD", "POST"},
        ("POST", "/models"): {"GET", "HEAD"},
        ("POST", "/models/iris"): {"GET", "HEAD"},
        ("GET", "/v1/models/iris:predict"): {"POST"},
        ("POST", "/v1/models/iris"): {"GET", "HEAD"},
        ("POST", "/"): {"GET", "HEAD"},
    }
    for (method, url), allowed in cases.items():
        r = client.request(method, url)
        problem(r, 405)
        assert {m.strip() for m in r.headers["allow"].split(",")} == allowed, url


def test_unknown_route_is_404_json(client: TestClient) -> None:
    for url in ("/nope", "/models/iris/predict/extra", "/v1/models/iris:explain"):
        assert "no route" in problem(client.get(url), 404)["detail"]


def test_get_query_mistakes(client: TestClient) -> None:
    detail = problem(client.get("/models/regressor/predict?a=1&c=2"), 400)["detail"]
    assert "missing 'b'" in detail
    assert "unknown 'c'" in detail
    assert "more than once" in problem(client.get("/models/regressor/predict?a=1&a=2&b=1"), 400)["detail"]
    r = client.get("/models/regressor/predict?a=x&b=1")
    assert "expected a number, got string 'x'" in problem(r, 400)["detail"]
    assert "GET only supports scalar features" in problem(client.get("/models/echo/predict"), 400)["detail"]


def test_request_id_from_the_client_is_kept(client: TestClient) -> None:
    r = client.post("/models/iris/predict", json=[], headers={"x-request-id": "abc-123"})
    assert problem(r, 400)["request_id"] == "abc-123"


def test_500_hides_internals(client: TestClient) -> None:
    r = client.post("/models/regressor/predict", json={"a": -999, "b": 1})
    body = problem(r, 500)
    assert "secret" not in r.text
    assert "/srv" not in r.text
    assert "Traceback" not in r.text
    assert body["detail"] == "model 'regressor' failed to predict"
    r = client.post("/v1/models/regressor:predict", json={"instances": [[-999, 1]]})
    problem(r, 500)
    assert "secret" not in r.text


# KServe V1 ------------------------------------------------------------------------------------------------
def test_v1_instances(client: TestClient) -> None:
    r = client.post("/v1/models/iris:predict", json={"instances": [ROW, list(VIRGINICA.values())]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": ["setosa", "virginica"]}
    r = client.post("/v1/models/iris:predict", json={"instances": [ROW], "outputs": ["probabilities"]})
    assert math.isclose(sum(r.json()["predictions"][0]["probabilities"]), 1.0)
    r = client.post("/v1/models/regressor:predict", json={"inputs": {"a": [1, 999], "b": [1, 1]}})
    assert r.json() == {"outputs": [1.0, None]}


def test_v1_errors(client: TestClient) -> None:
    r = client.post("/v1/models/iris:predict", json={"instances": [ROW, {**ROW, "petal_width": "x"}]})
    assert problem(r, 400)["detail"] == "instance 1: 'petal_width' expected a number, got string 'x'"
    r = client.post("/v1/models/iris:predict", json={"instances": [ROW], "outputs": ["nope"]})
    assert "unknown 'nope'" in problem(r, 400)["detail"]


def test_v1_status(client: TestClient) -> None:
    assert client.get("/v1/models/iris").json() == {
        "name": "iris",
        "ready": True,
        "model_version_status": [{"version": "1", "state": "AVAILABLE"}],
    }


# listing --------------------------------------------------------------------------------------------------
def test_index(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["name"] == "modelapi"
    assert body["models"] == ["iris", "echo", "regressor"]
    assert body["links"]["docs"] == "/docs"
    assert body["links"]["openapi"] == "/openapi.json"
    assert body["links"]["playgrounds"] == {n: f"/models/{n}/playground" for n in ["iris", "echo", "regressor"]}
    assert client.get("/models/iris").json()["urls"]["playground"] == "/models/iris/playground"


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({**ROW, "sepal_width": "abc"}, "sepal_width", "record 0: 'sepal_width' expected a number, got string 'abc'"),
        ({**ROW, "petal_width": None}, "petal_width", "record 0: 'petal_width' expected a number, got null"),
        ({k: v for k, v in ROW.items() if k != "petal_length"}, "petal_length", "record 0: missing 'petal_length'"),
        ({**ROW, "colour": 1}, "colour", "record 0: unknown 'colour'"),
        ([ROW, {**ROW, "sepal_length": True}], "sepal_length", "record 1: 'sepal_length' expected a number"),
    ],
)
def test_an_invalid_value_names_its_field(client: TestClient, body: Any, field: str, detail: str) -> None:
    answer = problem(client.post("/models/iris/predict", json=body), 400)
    assert answer["field"] == field  # for a form to show the message next to that field
    assert answer["detail"].startswith(detail)


def test_a_problem_with_the_body_as_a_whole_names_no_field(client: TestClient) -> None:
    assert "field" not in problem(client.post("/models/iris/predict", json=[]), 400)
    assert "field" not in problem(
        client.post("/models/iris/predict", content=b"{", headers={"content-type": "application/json"}), 400
    )
    r = client.get("/models/iris/predict", params={**ROW, "sepal_length": "x"})
    assert problem(r, 400)["field"] == "sepal_length"


def test_models_list(client: TestClient) -> None:
    models = client.get("/models").json()["models"]
    assert [m["name"] for m in models] == ["iris", "echo", "regressor"]
    iris = models[0]
    assert iris["version"] == "1"
    assert iris["platform"] == "python"
    assert iris["ready"] is True
    assert [i["name"] for i in iris["inputs"]] == IRIS_FEATURES
    assert iris["outputs"][1]["labels"] == list(IRIS_LABELS)
    assert iris["urls"]["predict"] == "/models/iris/predict"
    assert iris["urls"]["v1_predict"] == "/v1/models/iris:predict"


def test_model_metadata_example_works(client: TestClient) -> None:
    for name in ("iris", "echo", "regressor"):
        meta = client.get(f"/models/{name}").json()
        assert meta["name"] == name
        r = client.post(meta["urls"]["predict"], json=meta["example"]["request"])
        assert r.status_code == 200, r.text
        if meta["example"]["query"] is not None:
            assert client.get(meta["urls"]["predict"] + "?" + meta["example"]["query"]).status_code == 200
    assert client.get("/models/iris").json()["example"]["request"] == ROW


def test_the_package_version_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from modelapi.protocols import common

    calls: list[str] = []

    def version(name: str) -> str:
        calls.append(name)
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    common.package_version.cache_clear()
    try:
        assert common.package_version() == "0+unknown"  # a bare checkout still answers
        assert common.package_version() == "0+unknown"
        assert calls == ["modelapi"]
    finally:
        common.package_version.cache_clear()
