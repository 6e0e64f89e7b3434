"""NVIDIA's own Triton HTTP client, unchanged, against the real server: the V2 front end speaks its dialect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers.triton_http import triton_http
from toymodels import IRIS_FEATURES, IrisClassifier

from .server import serve

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpclient.InferenceServerClient]:
    args = ("toymodels:IrisClassifier", "toymodels:Echo", "--name", "iris", "--name", "echo")
    with (
        serve(*args, tmp_dir=tmp_path_factory.mktemp("triton")) as server,
        triton_http(server.url.removeprefix("http://")) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    """The iris model's answers for ROWS, computed in this process."""
    model = IrisClassifier()
    model.load()
    return dict(model.predict({f: ROWS[:, i] for i, f in enumerate(IRIS_FEATURES)}))


def iris_inputs(binary: bool, rows: np.ndarray = ROWS) -> list[httpclient.InferInput]:
    inputs = []
    for i, feature in enumerate(IRIS_FEATURES):
        item = httpclient.InferInput(feature, [len(rows)], "FP64")
        item.set_data_from_numpy(np.ascontiguousarray(rows[:, i]), binary_data=binary)
        inputs.append(item)
    return inputs


def labels_of(arr: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]


def test_health_and_server_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "modelapi" and "binary_tensor_data" in meta["extensions"]


def test_model_readiness_and_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("echo", "1")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("iris", "2")
    meta = triton.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == IRIS_FEATURES
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 3]),
    ]
    assert triton.get_model_metadata("iris", "1") == meta
    with pytest.raises(InferenceServerException) as err:
        triton.get_model_metadata("nope")
    assert err.value.status() == "404" and "no model named 'nope'" in err.value.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_iris(triton: httpclient.InferenceServerClient, expected: dict[str, np.ndarray], binary: bool) -> None:
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = triton.infer("iris", iris_inputs(binary), outputs=outputs, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42" and response["model_name"] == "iris"
    for out in response["outputs"]:
        assert ("parameters" in out) is binary and ("data" in out) is not binary
    assert labels_of(result.as_numpy("label")) == expected["label"].tolist()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=1e-12)


def test_infer_default_is_binary_outputs(triton: httpclient.InferenceServerClient, expected: dict[str, Any]) -> None:
    result = triton.infer("iris", iris_inputs(True), model_version="1")  # no outputs named: all, in binary
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert labels_of(result.as_numpy("label")) == expected["label"].tolist()
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=0, atol=1e-12)


def test_requested_output_only_mixing_json_and_binary(triton: httpclient.InferenceServerClient) -> None:
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = triton.infer("iris", iris_inputs(True), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("label") is None


def test_compressed_request(triton: httpclient.InferenceServerClient, expected: dict[str, Any]) -> None:
    result = triton.infer("iris", iris_inputs(True), request_compression_algorithm="gzip")
    assert labels_of(result.as_numpy("label")) == expected["label"].tolist()


ECHO = {
    "bool": np.array([True, False, True]),
    "uint8": np.array([0, 7, 255], np.uint8),
    "uint16": np.array([0, 7, 65535], np.uint16),
    "uint32": np.array([0, 7, 2**32 - 1], np.uint32),
    "uint64": np.array([0, 7, 2**64 - 1], np.uint64),
    "int8": np.array([-128, 0, 127], np.int8),
    "int16": np.array([-(2**15), 0, 2**15 - 1], np.int16),
    "int32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
    "int64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
    "fp16": np.array([-1.5, np.nan, 65504], np.float16),
    "fp32": np.array([-1.5, 0.1, np.inf], np.float32),
    "fp64": np.array([-1.5, 0.1, 1e300], np.float64),
    "bytes": np.array([b"a", b"", "naïve ☃".encode()], dtype=np.object_),
    "matrix": np.arange(18, dtype=np.float32).reshape(3, 2, 3),
}
TRITON_TYPES = {"bool": "BOOL", "bytes": "BYTES", "matrix": "FP32"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_echo_every_datatype(triton: httpclient.InferenceServerClient, binary: bool) -> None:
    sent = dict(ECHO)
    if not binary:  # JSON cannot carry NaN or Infinity (the server writes them as null): send finite values
        sent["fp16"] = np.array([-1.5, 0.5, 65504], np.float16)
        sent["fp32"] = np.array([-1.5, 0.1, 3.0e38], np.float32)
    inputs = []
    for name, arr in sent.items():
        item = httpclient.InferInput(name, list(arr.shape), TRITON_TYPES.get(name, name.upper()))
        item.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(item)
    outputs = [httpclient.InferRequestedOutput(f"{n}_out", binary_data=binary) for n in sent]
    result = triton.infer("echo", inputs, outputs=outputs)
    for name, arr in sent.items():
        got = result.as_numpy(f"{name}_out")
        assert got is not None and got.shape == arr.shape, name
        if name == "bytes":  # tritonclient gives bytes from binary data, str from JSON
            assert [v if isinstance(v, bytes) else v.encode() for v in got.tolist()] == arr.tolist()
        else:
            assert got.dtype == arr.dtype, name
            np.testing.assert_array_equal(got, arr, err_msg=name)  # NaN compares equal here


def test_errors_surface_as_inference_server_exception(triton: httpclient.InferenceServerClient) -> None:
    wrong = iris_inputs(True)
    wrong[0] = httpclient.InferInput("sepal_length", [3], "BYTES")
    wrong[0].set_data_from_numpy(np.array([b"5.1", b"6.7", b"5.9"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        triton.infer("iris", wrong)
    assert err.value.status() == "400"
    assert err.value.message() == "input 'sepal_length': datatype BYTES given, model expects FP64"

    with pytest.raises(InferenceServerException) as err:
        triton.infer("iris", iris_inputs(False)[:3])
    assert err.value.status() == "400" and "missing 'petal_width' (FP64 [-1])" in err.value.message()

    with pytest.raises(InferenceServerException) as err:
        triton.infer("nope", iris_inputs(True))
    assert err.value.status() == "404" and "no model named 'nope'" in err.value.message()

    with pytest.raises(InferenceServerException) as err:
        triton.infer("iris", iris_inputs(True), outputs=[httpclient.InferRequestedOutput("label", class_count=2)])
    assert err.value.status() == "400" and "classification extension is not supported" in err.value.message()


def test_inference_statistics(triton: httpclient.InferenceServerClient) -> None:
    """Triton's statistics extension, read by tritonclient unchanged."""
    before = triton.get_inference_statistics("iris")["model_stats"][0]
    triton.infer("iris", iris_inputs(True))
    after = triton.get_inference_statistics("iris", "1")
    (stat,) = after["model_stats"]
    assert stat["name"] == "iris" and stat["version"] == "1"
    assert stat["inference_count"] == before["inference_count"] + len(ROWS)
    assert stat["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert {m["name"] for m in triton.get_inference_statistics()["model_stats"]} == {"iris", "echo"}
    with pytest.raises(InferenceServerException):
        triton.get_inference_statistics("missing")
