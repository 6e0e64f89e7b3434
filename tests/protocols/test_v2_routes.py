"""The Open Inference Protocol routes, in process, against the toy models."""

from __future__ import annotations

import gzip
import struct
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import ECHO_TYPES, IRIS_FEATURES, IrisClassifier, Regressor

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def iris_request(rows: list[list[float]] = IRIS_ROWS, **extra: Any) -> dict[str, Any]:
    columns = list(zip(*rows, strict=True))
    inputs = [
        {"name": f, "datatype": "FP64", "shape": [len(rows)], "data": list(c)}
        for f, c in zip(IRIS_FEATURES, columns, strict=True)
    ]
    return {"inputs": inputs, **extra}


def regressor_request(a: list[float], b: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "datatype": "FP64", "shape": [len(a)], "data": a},
            {"name": "b", "datatype": "FP64", "shape": [len(b)], "data": b},
        ],
        **extra,
    }


def expected_iris() -> dict[str, np.ndarray]:
    model = IrisClassifier()
    model.load()
    x = np.array(IRIS_ROWS)
    return dict(model.predict({f: x[:, i] for i, f in enumerate(IRIS_FEATURES)}))


def assert_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    for word in words:
        assert word in body["error"]
    return body


# health and metadata ------------------------------------------------------------------------------------


def test_server_metadata(client: TestClient) -> None:
    r = client.get("/v2")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "name": "modelapi",
        "version": metadata.version("modelapi"),
        "extensions": ["binary_tensor_data", "statistics"],
    }


def test_health(client: TestClient) -> None:
    assert (client.get("/v2/health/live").status_code, client.get("/v2/health/live").json()) == (200, {"live": True})
    assert (client.get("/v2/health/ready").status_code, client.get("/v2/health/ready").json()) == (200, {"ready": True})


def test_not_ready_before_the_models_load() -> None:
    app = create_app([Regressor()], Settings())
    c = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing loads
    r = c.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (503, {"ready": False})
    r = c.get("/v2/models/regressor/ready")
    assert (r.status_code, r.json()) == (503, {"name": "regressor", "ready": False})
    assert c.get("/v2/health/live").status_code == 200
    assert_error(c.post("/v2/models/regressor/infer", json=regressor_request([1], [1])), 503, "not ready")


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/1"])
def test_model_metadata(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "iris" and body["versions"] == ["1"] and body["platform"] == "python"
    assert [i["name"] for i in body["inputs"]] == IRIS_FEATURES
    assert body["inputs"][0] == {"name": "sepal_length", "datatype": "FP64", "shape": [-1]}
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 3]),
    ]


@pytest.mark.parametrize("path", ["/v2/models/echo/ready", "/v2/models/echo/versions/1/ready"])
def test_model_ready(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert (r.status_code, r.json()) == (200, {"name": "echo", "ready": True})


def test_repository_index(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/v2/repository/index").status_code == 404  # a management route: off by default
    models = list(client.app.state.dataplane.models.values())  # type: ignore[attr-defined]
    app = create_app(models, Settings(management_routes=True, state_dir=tmp_path))
    with TestClient(app) as managed:
        refused = managed.post("/v2/repository/index")
        assert refused.status_code == 403 and "admin" in refused.json()["error"]  # never open, loopback included
    key = create_key(tmp_path, scope="admin")
    with TestClient(create_app(models, Settings(management_routes=True, state_dir=tmp_path))) as managed:
        r = managed.post("/v2/repository/index", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert [(m["name"], m["version"], m["state"]) for m in r.json()] == [
        ("iris", "1", "READY"),
        ("echo", "1", "READY"),
        ("regressor", "1", "READY"),
    ]


# 404, 405, 415 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("GET", "/v2/models/nope", ["no model named 'nope'", "iris, echo, regressor"]),
        ("GET", "/v2/models/nope/ready", ["no model named 'nope'"]),
        ("POST", "/v2/models/nope/infer", ["no model named 'nope'"]),
        ("GET", "/v2/models/iris/versions/2", ["model 'iris' has no version '2'"]),
        ("GET", "/v2/models/iris/versions/2/ready", ["has no version '2'"]),
        ("POST", "/v2/models/iris/versions/2/infer", ["has no version '2'"]),
        ("GET", "/v2/nope", ["no route GET /v2/nope"]),
        ("POST", "/v2/models/iris/predict", ["no route POST /v2/models/iris/predict"]),
    ],
)
def test_unknown_models_versions_and_routes_are_404(
    client: TestClient, method: str, path: str, words: list[str]
) -> None:
    body = iris_request() if method == "POST" else None
    assert_error(client.request(method, path, json=body), 404, *words)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/iris/infer", "POST"),
        ("PUT", "/v2/models/iris/versions/1/infer", "POST"),
        ("POST", "/v2/health/live", "GET, HEAD"),
        ("DELETE", "/v2/models/iris", "GET, HEAD"),
        ("POST", "/v2", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(client: TestClient, method: str, path: str, allow: str) -> None:
    r = client.request(method, path)
    assert_error(r, 405, f"{method} is not allowed on {path}")
    assert sorted(m.strip() for m in r.headers["allow"].split(",")) == sorted(allow.split(", "))


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    r = client.post("/v2/models/iris/infer", content=orjson.dumps(iris_request()), headers={"content-type": "text/csv"})
    assert_error(r, 415, "content type 'text/csv' is not supported")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", None])
def test_json_content_types_are_accepted(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v2/models/iris/infer", content=orjson.dumps(iris_request()), headers=headers)
    assert r.status_code == 200, r.text


# inference ----------------------------------------------------------------------------------------------


def test_infer_matches_the_model(client: TestClient) -> None:
    r = client.post("/v2/models/iris/infer", json=iris_request(id="req-1"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-1")
    want = expected_iris()
    label, probs = body["outputs"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": want["label"].tolist()}
    assert (probs["name"], probs["datatype"], probs["shape"]) == ("probabilities", "FP64", [2, 3])
    assert np.allclose(probs["data"], want["probabilities"].reshape(-1), rtol=0, atol=1e-12)


def test_versioned_infer(client: TestClient) -> None:
    r = client.post("/v2/models/regressor/versions/1/infer", json=regressor_request([1, 2], [1, 1]))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.0, 3.0]


def test_id_is_absent_when_not_sent(client: TestClient) -> None:
    assert "id" not in client.post("/v2/models/regressor/infer", json=regressor_request([1], [1])).json()


def test_requested_outputs_only_and_in_order(client: TestClient) -> None:
    r = client.post("/v2/models/iris/infer", json=iris_request(outputs=[{"name": "probabilities"}, {"name": "label"}]))
    assert [o["name"] for o in r.json()["outputs"]] == ["probabilities", "label"]
    r = client.post("/v2/models/iris/infer", json=iris_request(outputs=[{"name": "label"}]))
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]


def test_unknown_requested_output_is_400(client: TestClient) -> None:
    r = client.post("/v2/models/iris/infer", json=iris_request(outputs=[{"name": "score"}]))
    assert_error(r, 400, "outputs: unknown 'score'", "label, probabilities")


def test_nan_output_is_null(client: TestClient) -> None:
    r = client.post("/v2/models/regressor/infer", json=regressor_request([999, 2], [1, 1]))
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == [None, 3.0]


def test_model_failure_is_500_with_a_request_id_and_no_leak(client: TestClient) -> None:
    r = client.post(
        "/v2/models/regressor/infer", json=regressor_request([-999], [1]), headers={"x-request-id": "abc-1"}
    )
    body = assert_error(r, 500, "model 'regressor' failed to predict")
    assert body["request_id"] == "abc-1"
    for secret in ("secret", "/srv", "weights.bin", "RuntimeError", "Traceback"):
        assert secret not in r.text


def test_echo_every_datatype(client: TestClient) -> None:
    values: dict[str, list[Any]] = {
        "BOOL": [True, False], "BYTES": ["a", "☃"], "FP16": [0.5, -2.0], "FP32": [0.25, 1.5], "FP64": [0.1, -1e300],
    }  # fmt: skip
    inputs = [
        {"name": t.lower(), "datatype": t, "shape": [2], "data": values.get(t, [0, 1 if t.startswith("U") else -1])}
        for t in ECHO_TYPES
    ]
    inputs.append({"name": "matrix", "datatype": "FP32", "shape": [2, 2, 3], "data": [[[1, 2, 3], [4, 5, 6]]] * 2})
    r = client.post("/v2/models/echo/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    for item in inputs[:-1]:
        out = outputs[f"{item['name']}_out"]
        assert (out["datatype"], out["shape"], out["data"]) == (item["datatype"], [2], item["data"])
    assert outputs["matrix_out"]["shape"] == [2, 2, 3] and outputs["matrix_out"]["data"] == [1, 2, 3, 4, 5, 6] * 2


# binary tensor data extension ---------------------------------------------------------------------------


def test_binary_inputs_and_outputs(client: TestClient) -> None:
    a, b = np.array([1.0, 2.0, 999.0]), np.array([0.5, 0.5, 0.0])
    header = orjson.dumps({
        "inputs": [
            {"name": "a", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}},
            {"name": "b", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
        ],
        "outputs": [{"name": "prediction", "parameters": {"binary_data": True}}],
    })  # fmt: skip
    body = header + a.astype("<f8").tobytes() + b.astype("<f4").tobytes()
    r = client.post(
        "/v2/models/regressor/infer",
        content=body,
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    answer = orjson.loads(r.content[:n])
    assert answer["outputs"] == [
        {"name": "prediction", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}}
    ]
    got = np.frombuffer(r.content[n:], "<f8")
    assert got[:2].tolist() == [1.5, 3.5] and np.isnan(got[2])  # NaN stays NaN in binary


def test_binary_output_for_the_whole_request_with_bytes(client: TestClient) -> None:
    r = client.post("/v2/models/iris/infer", json=iris_request(parameters={"binary_data_output": True}))
    n = int(r.headers["inference-header-content-length"])
    label, probs = orjson.loads(r.content[:n])["outputs"]
    rest = r.content[n:]
    labels, offset = [], 0
    for _ in range(2):
        (length,) = struct.unpack_from("<I", rest, offset)
        labels.append(rest[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    assert label["parameters"]["binary_data_size"] == offset
    want = expected_iris()
    assert labels == want["label"].tolist()
    assert np.allclose(np.frombuffer(rest[offset:], "<f8"), want["probabilities"].reshape(-1), rtol=0, atol=1e-12)
    assert len(rest) == offset + probs["parameters"]["binary_data_size"]


@pytest.mark.parametrize(
    ("value", "words"),
    [("abc", "must be a non-negative integer, got 'abc'"), ("-1", "non-negative integer"), ("9999", "does not fit")],
)
def test_bad_header_length_is_400(client: TestClient, value: str, words: str) -> None:
    r = client.post("/v2/models/iris/infer", json=iris_request(), headers={"inference-header-content-length": value})
    assert_error(r, 400, "Inference-Header-Content-Length", words)


def test_binary_size_mismatch_is_400(client: TestClient) -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "a", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    )
    r = client.post(
        "/v2/models/regressor/infer",
        content=header + b"\0" * 8,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert_error(r, 400, "input 'a': shape [2] of FP64 needs 16 bytes but binary_data_size is 8")


# content encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("coding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_requests(client: TestClient, coding: str, compress: Any) -> None:
    body = compress(orjson.dumps(regressor_request([1, 2], [1, 1])))
    r = client.post("/v2/models/regressor/infer", content=body, headers={"content-encoding": coding})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1.0, 3.0]


def test_unsupported_or_bad_compression(client: TestClient) -> None:
    r = client.post("/v2/models/regressor/infer", content=b"x", headers={"content-encoding": "br"})
    assert_error(r, 415, "content encoding 'br' is not supported")
    assert r.headers["accept-encoding"] == "gzip, deflate"
    r = client.post("/v2/models/regressor/infer", content=b"not gzip", headers={"content-encoding": "gzip"})
    assert_error(r, 400, "not valid gzip data")
    r = client.post(
        "/v2/models/regressor/infer", content=gzip.compress(b"{}")[:-6], headers={"content-encoding": "gzip"}
    )
    assert_error(r, 400, "truncated gzip data")


def test_decompression_is_bounded_by_the_body_limit() -> None:
    app = create_app([Regressor()], Settings(max_body_bytes=10_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        bomb = gzip.compress(b" " * 1_000_000)
        assert len(bomb) < 10_000
        r = c.post("/v2/models/regressor/infer", content=bomb, headers={"content-encoding": "gzip"})
        assert_error(r, 413, "decompressed request body is larger than the limit of 10000 bytes")


# client mistakes: 400 with {"error"} naming the field ---------------------------------------------------


def a_only(datatype: str = "FP64", shape: Any = (1,), data: Any = (1,), **extra: Any) -> bytes:
    item = {"name": "a", "datatype": datatype, "shape": list(shape), "data": list(data)}
    return orjson.dumps({"inputs": [item], **extra})


def a_and_b(shape: list[int], data: list[Any]) -> bytes:
    a = {"name": "a", "datatype": "FP64", "shape": shape, "data": data}
    return orjson.dumps({"inputs": [a, {"name": "b", "datatype": "FP64", "shape": [1], "data": [1]}]})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["empty"]),
        (b"{not json", ["not valid JSON"]),
        (b"[]", ["JSON object"]),
        (b'{"inputs": 5}', ["inputs: must be a non-empty array"]),
        (b'{"inputs": [{"name": "a"}]}', ["input 'a': 'datatype' is missing"]),
        (b'{"inputs": [{"name": "a", "datatype": "FP64", "data": [1]}]}', ["input 'a': 'shape' is missing"]),
        (a_only(shape=[-2]), ["input 'a': 'shape' [-2] has a negative size"]),
        (a_only(shape=[2]), ["input 'a': shape [2] has 2 elements but 'data' has 1"]),
        (a_only("INT64", data=[1.5]), ["input 'a': datatype INT64 needs integers, got 1.5"]),
        (a_only(data=["x"]), ["input 'a': datatype FP64 needs numbers or null, got the string 'x'"]),
        (a_only("BYTES", data=["x"]), ["input 'a': datatype BYTES given, model expects FP64"]),
        (a_only("BF16"), ["input 'a': datatype BF16 is not supported"]),
        (a_only(), ["missing 'b' (FP64 [-1])"]),
        (a_only(id=1), ["id: must be a string"]),
        (a_and_b([1], [None]), ["input 'a': non-finite value"]),
        (a_and_b([1, 2], [[1, 2]]), ["input 'a': expected shape [-1]"]),
    ],
)
def test_client_mistakes_are_400_naming_the_field(client: TestClient, body: bytes, words: list[str]) -> None:
    r = client.post("/v2/models/regressor/infer", content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, *words)


def test_too_many_rows_is_413(client: TestClient) -> None:
    r = client.post("/v2/models/regressor/infer", json=regressor_request([1.0] * 1001, [1.0] * 1001))
    assert_error(r, 413, "1001 rows", "limit is 1000")


def test_extra_input_is_400(client: TestClient) -> None:
    body = regressor_request([1], [1])
    body["inputs"].append({"name": "c", "datatype": "FP64", "shape": [1], "data": [1]})
    assert_error(client.post("/v2/models/regressor/infer", json=body), 400, "unknown 'c'")
