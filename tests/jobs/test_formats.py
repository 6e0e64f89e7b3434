"""Input splitting and decoding, output negotiation, and results that round-trip exactly in every format."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from helpers.jobmodels import Scorer, csv_text, rows
from helpers.jobs import AppFactory, wait_for
from modelapi.errors import InvalidInput, NotAcceptable
from modelapi.jobs import formats_in, formats_out
from modelapi.protocols.records.codec import encode_rows


def expected_outputs(records: list[dict[str, object]]) -> dict[str, np.ndarray]:
    model = Scorer()
    inputs = {
        "a": np.array([r["a"] for r in records], dtype=np.float64),
        "b": np.array([r["b"] for r in records], dtype=np.int64),
        "tag": np.array([r["tag"] for r in records], dtype=object),
    }
    return dict(model.predict(inputs))


def test_results_round_trip_exactly_in_every_format(make_client: AppFactory) -> None:
    client = make_client()
    records = rows(23, seed=7)
    r = client.post("/models/scorer/jobs", content=csv_text(records), headers={"content-type": "text/csv"})
    location = r.headers["location"]
    assert wait_for(client, location, {"succeeded", "failed"})["status"] == "succeeded"
    expected = expected_outputs(records)
    flat = formats_out.flat_columns(expected, Scorer.signature)
    assert list(flat)[:4] == ["prediction", "probabilities.lo", "probabilities.mid", "probabilities.hi"]

    def fetch(accept: str) -> bytes:
        res = client.get(f"{location}/result", headers={"accept": accept})
        assert res.status_code == 200, res.text
        assert res.headers["content-type"].startswith(formats_out.MEDIA[formats_out.negotiate(accept)].split(";")[0])
        return res.content

    parquet = pq.read_table(io.BytesIO(fetch("application/vnd.apache.parquet")))
    csv = pacsv.read_csv(io.BytesIO(fetch("text/csv")))
    for table in (parquet, csv):
        assert table.column_names == list(flat)
        for name, want in flat.items():
            got = table.column(name).to_numpy(zero_copy_only=False)
            assert got.tolist() == want.tolist(), name  # exact, float bits included
    want_rows = json.loads(orjson.dumps(encode_rows(expected, Scorer.signature), option=orjson.OPT_SERIALIZE_NUMPY))
    assert json.loads(fetch("application/json")) == want_rows
    lines = fetch("application/x-ndjson").decode().splitlines()
    assert [json.loads(line) for line in lines] == want_rows
    assert want_rows[1]["probabilities"].keys() == {"lo", "mid", "hi"}


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("text/csv", "csv"),
        ("text/csv;q=0.5, application/vnd.apache.parquet", "parquet"),
        ("application/x-ndjson;q=0.9, text/csv;q=0.1", "ndjson"),
        ("image/png, application/json;q=0.2", "json"),
    ],
)
def test_negotiation(accept: str | None, fmt: str) -> None:
    assert formats_out.negotiate(accept) == fmt


def test_negotiation_refuses_what_it_cannot_write() -> None:
    with pytest.raises(NotAcceptable):
        formats_out.negotiate("image/png")
    with pytest.raises(NotAcceptable):
        formats_out.negotiate("text/csv;q=0")
    with pytest.raises(NotAcceptable):
        formats_out.negotiate(None, "xlsx")
    assert formats_out.negotiate("image/png", "csv") == "csv"


def test_result_format_not_acceptable_is_406(make_client: AppFactory) -> None:
    client = make_client()
    r = client.post("/models/scorer/jobs", json=rows(2))
    wait_for(client, r.headers["location"], {"succeeded"})
    res = client.get(r.headers["location"] + "/result", headers={"accept": "image/png"})
    assert res.status_code == 406


def test_chunks_have_fixed_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(rows(10)))
    chunks = list(formats_in.split(path, "csv", Scorer.signature, 4))
    assert [c.rows for c in chunks] == [4, 4, 2]
    decoded = formats_in.decode_chunk(chunks[2], Scorer.signature, 8)
    assert decoded["b"].dtype == np.int64 and decoded["a"].dtype == np.float64
    assert decoded["tag"].tolist() == [r["tag"] for r in rows(10)[8:]]


def test_parquet_with_a_wrongly_typed_column_names_the_row(tmp_path: Path) -> None:
    table = pa.table({"a": ["1.5", "2.5", "x"], "b": [1, 2, 3], "tag": ["p", "q", "r"]})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    [chunk] = formats_in.split(path, "parquet", Scorer.signature, 10)
    with pytest.raises(formats_in.BadValue) as info:
        formats_in.decode_chunk(chunk, Scorer.signature, 100)
    assert info.value.row == 103 and info.value.column == "a"

    pq.write_table(pa.table({"a": [1.0, None], "b": [1, 2], "tag": ["p", "q"]}), path)
    [chunk] = formats_in.split(path, "parquet", Scorer.signature, 10)
    with pytest.raises(formats_in.BadValue) as info:
        formats_in.decode_chunk(chunk, Scorer.signature, 0)
    assert info.value.row == 2 and "null" in info.value.detail


def test_csv_cannot_carry_an_array_input(tmp_path: Path) -> None:
    from modelapi.signature import Signature, TensorSpec

    sig = Signature((TensorSpec("m", "FP32", (-1, 2)),), (TensorSpec("y"),))
    path = tmp_path / "in.csv"
    path.write_text("m\n1\n")
    with pytest.raises(InvalidInput, match="JSON records or Parquet"):
        list(formats_in.split(path, "csv", sig, 10))
    path = tmp_path / "in.json"
    path.write_text('[{"m": [1, 2]}, {"m": [3]}]')
    [chunk] = formats_in.split(path, "json", sig, 10)
    with pytest.raises(formats_in.BadValue) as info:
        formats_in.decode_chunk(chunk, sig, 0)
    assert info.value.row == 2 and info.value.column == "m"


def test_format_of() -> None:
    assert formats_in.format_of("text/csv; charset=utf-8") == "csv"
    assert formats_in.format_of("application/octet-stream", "x.PARQUET") == "parquet"
    assert formats_in.format_of(None, "x.jsonl") == "ndjson"
