"""The gRPC front end of the real server (``--grpc-port``), spoken to by NVIDIA's ``tritonclient.grpc`` (sync and
asyncio) and by clients generated from Triton's own .proto, unchanged: every RPC, raw and typed tensors, API keys
in metadata, deadlines, health, reflection and the repository RPCs; the same error texts as over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tc_aio
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers.keys import create_key
from helpers.model_repo import make_repository
from helpers.ports import free_port
from toymodels import IRIS_FEATURES, IrisClassifier

from .server import RunningServer, serve

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


@dataclass
class Grpc:
    server: RunningServer
    address: str
    client: tc.InferenceServerClient
    key: dict[str, str]  # predict scope, every model
    admin: dict[str, str]
    echo_only: dict[str, str]  # predict scope, the echo model only


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grpc]:
    tmp = tmp_path_factory.mktemp("grpc")
    state = tmp / "state"
    keys = {
        "key": create_key(state, "app"),
        "admin": create_key(state, "ops", scope="admin"),
        "echo_only": create_key(state, "echo", models=["echo"]),
    }
    repo = make_repository(tmp / "repo", {"m": [1]})
    port = free_port()
    args = (str(repo), "toymodels:IrisClassifier", "toymodels:Echo", "toymodels:Sleepy", "toymodels:Regressor")
    flags = ("--auth", "on", "--state-dir", str(state), "--enable-management", "--grpc-port", str(port))
    with serve(*args, *flags, tmp_dir=tmp) as server:
        address = f"127.0.0.1:{port}"
        client = tc.InferenceServerClient(address)
        try:
            yield Grpc(server, address, client, *({"authorization": f"Bearer {k}"} for k in keys.values()))
        finally:
            client.close()


def iris_inputs(rows: np.ndarray = ROWS) -> list[tc.InferInput]:
    inputs = []
    for i, feature in enumerate(IRIS_FEATURES):
        item = tc.InferInput(feature, [len(rows)], "FP64")
        item.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
        inputs.append(item)
    return inputs


def expected_iris(rows: np.ndarray = ROWS) -> dict[str, np.ndarray]:
    model = IrisClassifier()
    model.load()
    return dict(model.predict({f: rows[:, i] for i, f in enumerate(IRIS_FEATURES)}))


def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    assert isinstance(call, InferenceServerException), call
    return grpc.StatusCode[str(call.status()).removeprefix("StatusCode.")], str(call.message())


def test_health_metadata_and_inference_with_tritonclient(grpc_server: Grpc) -> None:
    client, key = grpc_server.client, grpc_server.key
    assert client.is_server_live() and client.is_server_ready()  # open, as /v2/health/* are
    assert client.is_model_ready("iris", headers=key)
    meta = client.get_server_metadata(headers=key)
    assert meta.name == "modelapi" and "statistics" in meta.extensions
    model = client.get_model_metadata("iris", headers=key, as_json=True)
    assert [i["name"] for i in model["inputs"]] == IRIS_FEATURES
    assert model["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": ["-1", "3"]}

    result = client.infer("iris", iris_inputs(), headers=key, request_id="r-1")
    want = expected_iris()
    assert [v.decode() for v in result.as_numpy("label")] == list(want["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"])
    answer = result.get_response()
    assert (answer.model_name, answer.model_version, answer.id) == ("iris", "1", "r-1")
    assert len(answer.raw_output_contents) == 2  # a raw request gets a raw answer (all tritonclient reads)

    only = client.infer("iris", iris_inputs(), outputs=[tc.InferRequestedOutput("label")], headers=key)
    assert [o.name for o in only.get_response().outputs] == ["label"]

    stats = client.get_inference_statistics("iris", headers=key, as_json=True)["model_stats"][0]
    assert stats["name"] == "iris" and int(stats["inference_count"]) >= 6


def test_every_datatype_round_trips_raw(grpc_server: Grpc) -> None:
    values = {
        "bool": np.array([True, False]),
        "uint8": np.array([0, 255], np.uint8),
        "int16": np.array([-3, 7], np.int16),
        "uint64": np.array([0, 2**64 - 1], np.uint64),
        "int64": np.array([-(2**63), 5], np.int64),
        "fp16": np.array([0.5, -2.0], np.float16),
        "fp32": np.array([1.5, np.inf], np.float32),
        "fp64": np.array([np.nan, 1e300]),
        "bytes": np.array([b"caf\xc3\xa9", b""], dtype=object),
        "uint16": np.array([1, 65535], np.uint16),
        "uint32": np.array([1, 2**32 - 1], np.uint32),
        "int8": np.array([-128, 127], np.int8),
        "int32": np.array([-(2**31), 2**31 - 1], np.int32),
        "matrix": np.arange(12, dtype=np.float32).reshape(2, 2, 3),
    }
    inputs = []
    for name, arr in values.items():
        datatype = {"bytes": "BYTES", "matrix": "FP32"}.get(name, name.upper())
        item = tc.InferInput(name, list(arr.shape), datatype)
        item.set_data_from_numpy(arr)
        inputs.append(item)
    result = grpc_server.client.infer(
        "echo", inputs, outputs=[tc.InferRequestedOutput(f"{n}_out") for n in values], headers=grpc_server.key
    )
    for name, arr in values.items():
        got = result.as_numpy(f"{name}_out")
        if name == "bytes":
            assert got.tolist() == arr.tolist()
        else:
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, arr)


def test_typed_contents_from_a_client_generated_from_tritons_proto(grpc_server: Grpc) -> None:
    """Typed ``contents`` in, typed contents out; values checked against their datatype as JSON's are."""
    request = service_pb2.ModelInferRequest(model_name="iris", id="typed")
    for i, feature in enumerate(IRIS_FEATURES):
        item = request.inputs.add(name=feature, datatype="FP64", shape=[len(ROWS)])
        item.contents.fp64_contents.extend(ROWS[:, i].tolist())
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = tuple(grpc_server.key.items())
        answer = stub.ModelInfer(request, metadata=metadata)
        assert not answer.raw_output_contents
        outputs = {o.name: o for o in answer.outputs}
        assert [b.decode() for b in outputs["label"].contents.bytes_contents] == list(expected_iris()["label"])
        assert list(outputs["probabilities"].shape) == [3, 3]
        np.testing.assert_allclose(
            np.array(outputs["probabilities"].contents.fp64_contents).reshape(3, 3), expected_iris()["probabilities"]
        )

        out_of_range = service_pb2.ModelInferRequest(model_name="echo")
        out_of_range.inputs.add(name="int8", datatype="INT8", shape=[1]).contents.int_contents.append(300)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(out_of_range, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "input 'int8': value 300 at element 0 is out of range for INT8 (-128..127)"


def test_errors_carry_the_http_messages(grpc_server: Grpc) -> None:
    client, key = grpc_server.client, grpc_server.key
    http_key = {"Authorization": key["authorization"]}
    body = {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [1.0]} for f in IRIS_FEATURES[:3]]}
    over_http = httpx.post(f"{grpc_server.server.url}/v2/models/iris/infer", json=body, headers=http_key)
    assert over_http.status_code == 400
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", iris_inputs(ROWS[:1, :])[:3], headers=key)
    assert status_of(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, over_http.json()["error"])

    wrong_type = tc.InferInput("fp32", [1], "INT64")
    wrong_type.set_data_from_numpy(np.array([1], np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("echo", [wrong_type], headers=key)
    assert status_of(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'fp32': datatype INT64 given, model expects FP32",
    )

    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", iris_inputs(), headers=key)
    code, message = status_of(caught.value)
    assert code == grpc.StatusCode.NOT_FOUND and message.startswith("no model named 'nope'")
    assert message == httpx.get(f"{grpc_server.server.url}/v2/models/nope", headers=http_key).json()["error"]
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("iris", "7", headers=key)
    assert status_of(caught.value)[0] == grpc.StatusCode.NOT_FOUND

    failing = []
    for name, value in (("a", -999.0), ("b", 1.0)):  # the model raises, naming a path in its message
        item = tc.InferInput(name, [1], "FP64")
        item.set_data_from_numpy(np.array([value]))
        failing.append(item)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("regressor", failing, headers=key)
    assert status_of(caught.value) == (grpc.StatusCode.INTERNAL, "model 'regressor' failed to predict")


def test_api_keys_in_metadata(grpc_server: Grpc) -> None:
    client = grpc_server.client
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", iris_inputs())
    code, message = status_of(caught.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in message
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("iris", headers={"x-api-key": "mk_00000000_" + "0" * 64})
    assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid")
    x_api_key = {"x-api-key": grpc_server.key["authorization"].removeprefix("Bearer ")}
    assert client.is_model_ready("iris", headers=x_api_key)
    # a key limited to other models sees no iris, as over HTTP
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", iris_inputs(), headers=grpc_server.echo_only)
    assert status_of(caught.value)[0] == grpc.StatusCode.NOT_FOUND
    stats = client.get_inference_statistics(headers=grpc_server.echo_only, as_json=True)
    assert {s["name"] for s in stats["model_stats"]} == {"echo"}


def test_the_calls_deadline_bounds_the_call(grpc_server: Grpc) -> None:
    slow = tc.InferInput("seconds", [1], "FP64")
    slow.set_data_from_numpy(np.array([1.5]))
    with pytest.raises(InferenceServerException) as caught:
        grpc_server.client.infer("sleepy", [slow], headers=grpc_server.key, client_timeout=0.3)
    assert status_of(caught.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED


def test_repository_rpcs_need_an_admin_key(grpc_server: Grpc) -> None:
    client = grpc_server.client
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_repository_index(headers=grpc_server.key)
    code, message = status_of(caught.value)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "admin scope" in message
    admin = grpc_server.admin
    index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert {"name": "m", "version": "1", "state": "READY"} in index
    client.unload_model("m", headers=admin)
    assert not client.is_model_ready("m", headers=admin)
    client.load_model("m", headers=admin)
    assert client.is_model_ready("m", headers=admin)
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("m", headers=admin, config='{"backend": "python"}')
    assert status_of(caught.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_health_service_and_reflection(grpc_server: Grpc) -> None:
    with grpc.insecure_channel(grpc_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflected = ProtoReflectionDescriptorDatabase(channel)
        assert "inference.GRPCInferenceService" in set(reflected.get_services())
        described = descriptor_pool.DescriptorPool(reflected).FindMessageTypeByName("inference.ModelInferRequest")
        assert described.fields_by_name["raw_input_contents"].number == 7  # what grpcurl needs to build a call


def test_asyncio_client(grpc_server: Grpc) -> None:
    async def calls() -> None:
        client = tc_aio.InferenceServerClient(grpc_server.address)
        try:
            assert await client.is_server_ready()
            results = await asyncio.gather(
                *(client.infer("iris", iris_inputs(), headers=grpc_server.key) for _ in range(8))
            )
            for result in results:
                np.testing.assert_allclose(result.as_numpy("probabilities"), expected_iris()["probabilities"])
            with pytest.raises(InferenceServerException):
                await client.infer("iris", iris_inputs())  # no key
        finally:
            await client.close()

    asyncio.run(calls())


def test_metrics_and_the_access_log_see_grpc_calls(grpc_server: Grpc) -> None:
    """Calls reach the observer as protocol "grpc": answered ones and refusals before any model."""
    grpc_server.client.infer("iris", iris_inputs(), headers={**grpc_server.key, "x-request-id": "grpc-call-42"})
    with pytest.raises(InferenceServerException):
        grpc_server.client.infer("iris", iris_inputs())  # no key
    metrics = httpx.get(
        f"{grpc_server.server.url}/metrics", headers={"Authorization": grpc_server.admin["authorization"]}
    ).text
    samples = [line for line in metrics.splitlines() if 'protocol="grpc"' in line]
    assert any(s.startswith("modelapi_requests_total{") and 'model="iris"' in s and 'code="2xx"' in s for s in samples)
    assert any(s.startswith("modelapi_requests_rejected_total{") and "unauthenticated" in s for s in samples)
    log = grpc_server.server.log()
    assert "gRPC (Open Inference Protocol" in log
    line = next(ln for ln in log.splitlines() if "grpc-call-42" in ln)  # the call's id on its access line
    assert "/inference.GRPCInferenceService/ModelInfer" in line and '"model":"iris"' in line


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    from helpers.tls import make_certs

    certs = make_certs(tmp_path)
    client_cert = certs.ca.issue_cert("client@example.com")
    port = free_port()
    args = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key), "--tls-ca", str(certs.ca_file))
    tls = certs.client_context(client_cert)
    with serve("toymodels:IrisClassifier", *args, "--grpc-port", str(port), tmp_dir=tmp_path, tls=tls):
        chain = tmp_path / "client.pem"
        client_key = tmp_path / "client.key"
        client_cert.cert_chain_pems[0].write_to_path(str(chain))
        client_cert.private_key_pem.write_to_path(str(client_key))
        client = tc.InferenceServerClient(
            f"127.0.0.1:{port}",
            ssl=True,
            root_certificates=str(certs.ca_file),
            private_key=str(client_key),
            certificate_chain=str(chain),
        )
        try:
            assert client.is_server_ready()
            np.testing.assert_allclose(
                client.infer("iris", iris_inputs()).as_numpy("probabilities"), expected_iris()["probabilities"]
            )
        finally:
            client.close()
        # without a client certificate, or in plain text, no call gets through
        stranger = tc.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, root_certificates=str(certs.ca_file))
        plain = tc.InferenceServerClient(f"127.0.0.1:{port}")
        for refused in (stranger, plain):
            with pytest.raises(InferenceServerException):
                refused.is_server_live(client_timeout=5)
            refused.close()
