"""The client against the real server: predict in every data shape, V2 inference in JSON and binary, jobs,
API keys, and errors that carry the server's message and request id."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from helpers.clientserver import Served
from modelapi import AsyncClient, AuthenticationError, BadRequestError, Client, ConflictError, NotFoundError

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]
COLUMNS = ["prediction", *(f"probabilities.{c}" for c in CLASSES)]


class Recording(httpx.HTTPTransport):
    """A real transport that remembers the content type of each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.content_types: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.content_types.append(request.headers.get("content-type", ""))
        return super().handle_request(request)


@pytest.fixture
def client(served: Served) -> Client:
    return Client(served.url, api_key=served.key)


def frame(index: list[int] | None = None) -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=FEATURES, index=index)


def test_predict_one_record_answers_a_dict(client: Client) -> None:
    answer = client.predict("iris", dict(zip(FEATURES, ROWS[0], strict=True)))
    assert isinstance(answer, dict) and answer["prediction"] == "setosa"
    assert list(answer["probabilities"]) == CLASSES and sum(answer["probabilities"].values()) == pytest.approx(1)


def test_predict_rows_answers_a_frame_the_same_for_every_input_shape(client: Client) -> None:
    df = frame(index=[10, 20, 30])
    by_frame = client.predict("iris", df)
    assert isinstance(by_frame, pd.DataFrame) and list(by_frame.columns) == COLUMNS
    assert list(by_frame.index) == [10, 20, 30]  # lines up with the input
    assert list(by_frame["prediction"]) == ["setosa", "versicolor", "virginica"]
    by_records = client.predict("iris", df.to_dict(orient="records"))
    by_array = client.predict("iris", np.array(ROWS))  # columns in the model's feature order
    pd.testing.assert_frame_equal(by_records, by_frame.reset_index(drop=True))
    pd.testing.assert_frame_equal(by_array, by_records)
    one = client.predict("iris", dict(zip(FEATURES, ROWS[2], strict=True)))
    assert isinstance(one, dict)
    assert by_frame.loc[30, "probabilities.virginica"] == one["probabilities"]["virginica"]
    with pytest.raises(ValueError, match="takes 4 features, in this order: sepal_length, sepal_width"):
        client.predict("iris", np.ones((2, 3)))


def test_predict_a_version(client: Client) -> None:
    assert client.predict("iris", frame(), version=1)["prediction"].tolist() == ["setosa", "versicolor", "virginica"]
    with pytest.raises(NotFoundError, match="no version '7'"):
        client.predict("iris", frame(), version="7")


def test_models_metadata_ready(client: Client) -> None:
    assert {m["name"] for m in client.models()} == {"iris", "echo"}
    meta = client.metadata("iris")
    assert [i["name"] for i in meta["inputs"]] == FEATURES and meta["example"]["request"]["sepal_length"] == 5.1
    assert client.ready() and client.ready("iris") and client.ready("iris", version=1)
    with pytest.raises(NotFoundError):
        client.ready("nope")


def test_infer_json_and_binary_agree(served: Served) -> None:
    transport = Recording()
    client = Client(served.url, api_key=served.key, transport=transport)
    small = {name: np.array(col) for name, col in zip(FEATURES, np.array(ROWS).T, strict=True)}
    out = client.infer("iris", small)
    assert out["label"].tolist() == ["setosa", "versicolor", "virginica"] and out["probabilities"].shape == (3, 3)
    rng = np.random.default_rng(3)
    large = {name: rng.uniform(0.1, 7.0, 5000) for name in FEATURES}  # 40 kB per input: binary by size
    auto = client.infer("iris", large)
    forced_json = client.infer("iris", large, binary=False)
    assert transport.content_types == ["application/json", "application/octet-stream", "application/json"]
    # the same numbers either way (exactly so for the tensors themselves: the echo test below; the model's own
    # arithmetic may round its last bit differently from one call to the next)
    np.testing.assert_allclose(auto["probabilities"], forced_json["probabilities"], rtol=1e-12)
    np.testing.assert_array_equal(auto["label"], forced_json["label"])
    auto["probabilities"] *= 2  # the arrays are the caller's own, writable
    only = client.infer("iris", small, outputs=["probabilities"], binary=True)
    assert list(only) == ["probabilities"]
    np.testing.assert_allclose(only["probabilities"], out["probabilities"], rtol=1e-12)


@pytest.mark.parametrize("binary", [True, False])
def test_infer_round_trips_every_datatype(client: Client, binary: bool) -> None:
    n = 3
    inputs: dict[str, np.ndarray] = {
        "bool": np.array([True, False, True]),
        "uint8": np.array([0, 7, 255], dtype=np.uint8),
        "int64": np.array([-(2**40), 0, 2**40], dtype=np.int64),
        "fp32": np.array([0.5, -1.25, np.nan], dtype=np.float32),
        "fp64": np.array([1e-300, 2.5, 1e300]),
        "bytes": np.array(["a", "é", ""], dtype=object),
        "matrix": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
    }
    meta = client.metadata("echo")
    for spec in meta["inputs"]:  # the toy model takes every datatype; fill the others with zeros
        if spec["name"] not in inputs:
            inputs[spec["name"]] = np.zeros(n, dtype=spec["datatype"].lower().replace("fp", "float"))
    out = client.infer("echo", inputs, binary=binary)
    for name, arr in inputs.items():
        got = out[f"{name}_out"]
        assert got.shape == arr.shape, name
        if arr.dtype.kind == "f":
            np.testing.assert_array_equal(got, arr)
        else:
            assert got.tolist() == arr.tolist(), name


def test_a_job_from_a_frame_and_from_a_file(client: Client, served: Served, tmp_path: Path) -> None:
    df = pd.DataFrame(np.tile(ROWS, (40, 1)), columns=FEATURES)
    bar = io.StringIO()
    job = client.submit_job("iris", df)
    final = job.wait(progress=bar, timeout=120)
    assert final["status"] == "succeeded" and "100.0% 120/120 rows" in bar.getvalue()
    result = job.result()
    pd.testing.assert_frame_equal(result, client.predict("iris", df), check_dtype=False)
    path = tmp_path / "rows.csv"
    df.to_csv(path, index=False)
    from_file = client.submit_job("iris", path)
    from_file.wait(progress=False, timeout=120)
    pd.testing.assert_frame_equal(from_file.result(), result)
    assert client.job(job.id).status()["progress"]["rows_done"] == 120
    saved = job.save(tmp_path / "out.parquet")  # streamed to disk, in the suffix's format
    pd.testing.assert_frame_equal(pd.read_parquet(saved), result)
    assert list(pd.read_csv(job.save(tmp_path / "out.csv")).columns) == COLUMNS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.parquet", "rows.csv"]
    with pytest.raises(ConflictError, match="succeeded"):
        job.cancel()


def test_keys_come_from_the_argument_or_the_environment(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    row = dict(zip(FEATURES, ROWS[0], strict=True))
    with pytest.raises(AuthenticationError) as info:
        Client(served.url).predict("iris", row)
    assert info.value.status == 401 and "API key" in info.value.message
    monkeypatch.setenv("MODELAPI_API_KEY", served.key)
    assert Client(served.url).predict("iris", row)["prediction"] == "setosa"
    with pytest.raises(AuthenticationError):
        Client(served.url, api_key="mk_wrong_key").predict("iris", row)


def test_errors_carry_the_servers_message_and_request_id(client: Client, served: Served) -> None:
    with pytest.raises(BadRequestError) as info:
        client.predict("iris", {**dict(zip(FEATURES, ROWS[0], strict=True)), "sepal_width": "wide"})
    err = info.value
    assert err.status == 400 and err.message == "record 0: 'sepal_width' expected a number, got string 'wide'"
    assert err.request_id and err.request_id in served.server.log_with(err.request_id)  # it finds the request's line
    assert str(err).startswith("400 Bad Request: record 0: 'sepal_width'")
    with pytest.raises(BadRequestError, match="datatype BYTES given, model expects FP64") as v2:
        client.infer("iris", {name: np.array(["1", "2"]) for name in FEATURES}, binary=True)
    assert v2.value.request_id
    with pytest.raises(NotFoundError, match="iris") as missing:
        client.predict("irsi", {})
    assert missing.value.status == 404


def test_the_async_client_does_the_same_concurrently(served: Served, tmp_path: Path) -> None:
    async def run() -> None:
        async with AsyncClient(served.url, api_key=served.key) as client:
            df = frame()
            answers = await asyncio.gather(*(client.predict("iris", df) for _ in range(8)))
            for answer in answers:
                assert list(answer["prediction"]) == ["setosa", "versicolor", "virginica"]
            large = {name: np.full(4000, 5.0) for name in FEATURES}
            out, meta, ready = await asyncio.gather(
                client.infer("iris", large), client.metadata("iris"), client.ready("iris")
            )
            assert out["probabilities"].shape == (4000, 3) and meta["name"] == "iris" and ready
            job = await client.submit_job("iris", df)
            assert (await job.wait(progress=False, timeout=120))["status"] == "succeeded"
            pd.testing.assert_frame_equal(await job.result(), answers[0], check_dtype=False)
            saved = await job.save(tmp_path / "out.json")
            assert [row["prediction"] for row in json.loads(saved.read_text())] == ["setosa", "versicolor", "virginica"]
            with pytest.raises(BadRequestError, match="'petal_width' expected a number"):
                await client.predict("iris", {**dict(zip(FEATURES, ROWS[0], strict=True)), "petal_width": "x"})

    asyncio.run(run())
