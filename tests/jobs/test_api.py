"""The job routes in process: every status transition, bad inputs, cancellation, idempotency, ownership."""

from __future__ import annotations

import io
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.jobmodels import csv_text, rows
from helpers.jobs import AppFactory, wait_for

CSV = {"content-type": "text/csv"}


def submit(client, body: str | bytes, headers: dict[str, str] | None = None, model: str = "scorer"):  # type: ignore[no-untyped-def]
    return client.post(f"/models/{model}/jobs", content=body, headers={**CSV, **(headers or {})})


def test_queued_then_running_then_succeeded_and_it_survives_a_restart(make_client: AppFactory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    idle = make_client(job_workers=0)  # nobody works: the job stays queued
    r = submit(idle, csv_text(rows(10)))
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    body = r.json()
    assert location == f"/jobs/{body['id']}"
    assert body["status"] == "queued"
    assert body["progress"] == {"rows_done": 0, "rows_total": 10, "chunks_done": 0, "chunks_total": 3}
    time.sleep(0.3)
    assert idle.get(location).json()["status"] == "queued"
    idle.__exit__(None, None, None)

    monkeypatch.setenv("MODELAPI_TEST_DELAY", "0.3")
    busy = make_client()  # a new server on the same state directory picks the job up
    running = wait_for(busy, location, {"running", "succeeded"})
    assert running["status"] == "running"
    assert running["started_at"] is not None and running["finished_at"] is None
    done = wait_for(busy, location, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["rows_done"] == 10 and done["progress"]["chunks_done"] == 3
    assert done["error"] is None
    assert done["timings"]["running_s"] > 0.5 and done["timings"]["rows_per_s"] > 0
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert len(busy.get(f"{location}/result").json()) == 10


def test_a_bad_value_fails_the_job_naming_row_and_column(make_client: AppFactory) -> None:
    client = make_client()
    records = rows(9)
    text = csv_text(records).splitlines()
    text[7] = text[7].replace(text[7].split(",")[0], "abc", 1)  # data row 7 (line 8), column a
    r = submit(client, "\n".join(text) + "\n")
    assert r.status_code == 202
    done = wait_for(client, r.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["row"] == 7 and done["error"]["column"] == "a"
    assert "row 7" in done["error"]["detail"] and "'abc'" in done["error"]["detail"]
    assert done["progress"]["rows_done"] == 4  # the first chunk was done before the bad one
    res = client.get(r.headers["location"] + "/result")
    assert res.status_code == 409 and "row 7" in res.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "row", "column", "words"),
    [
        ('[{"a": 1, "b": 2, "tag": "x"}, {"a": 1, "b": 2.5, "tag": "x"}]', "application/json", 2, "b", "integer"),
        ('{"a": 1, "b": 2, "tag": "x"}\n{"a": 1, "b": 2}\n', "application/x-ndjson", 2, None, "missing 'tag'"),
        ("a,b,tag\n1,2,x\n1,2,x\n1,2,x\n1,2,x\n1,,x\n", "text/csv", 5, "b", "got string ''"),
        ("a,b,tag\n1,2,x\ninf,2,x\n", "text/csv", 2, "a", "expected a number"),
    ],
)
def test_bad_values_in_every_format(  # type: ignore[no-untyped-def]
    make_client: AppFactory, body, content_type, row, column, words
) -> None:
    client = make_client()
    r = submit(client, body, {"content-type": content_type})
    assert r.status_code == 202, r.text
    done = wait_for(client, r.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["row"] == row and done["error"]["column"] == column, done["error"]
    assert words in done["error"]["detail"]


def test_a_model_error_fails_the_job_with_the_rows(make_client: AppFactory) -> None:
    client = make_client()
    records = rows(8)
    records[5]["a"] = 666.0
    r = submit(client, csv_text(records))
    done = wait_for(client, r.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["detail"].startswith("rows 5-8: ")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        ("a,b\n1,2\n", "text/csv", 400, "missing 'tag'"),
        ("a,b,tag,extra\n1,2,x,3\n", "text/csv", 400, "unknown 'extra'"),
        ("", "text/csv", 400, "empty"),
        ("a,b,tag\n", "text/csv", 400, "no rows"),
        ("a,b,tag\n1,2,x,4,5\n", "text/csv", 400, "CSV"),
        ("[]", "application/json", 400, "no rows"),
        ('{"a": 1}', "application/json", 400, "list of records"),
        ("[{not json", "application/json", 400, "not valid JSON"),
        ('[{"x": 1}]', "application/json", 400, "missing 'a'"),
        ('{"a": 1, "b": 2, "tag": "x"}\n{oops\n', "application/x-ndjson", 400, "line 2"),
        ("PAR1 not really", "application/vnd.apache.parquet", 400, "PARQUET"),
        ("a,b,tag\n1,2,x\n", "application/xml", 415, "text/csv"),
        ("a,b,tag\n1,2,x\n", "", 415, "Content-Type"),
    ],
)
def test_bad_batches_are_refused_at_submission(  # type: ignore[no-untyped-def]
    make_client: AppFactory, body, content_type, status, words
) -> None:
    client = make_client()
    r = client.post("/models/scorer/jobs", content=body, headers={"content-type": content_type})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.json()["detail"]


def test_unknown_model_and_unknown_job_are_404_json(make_client: AppFactory) -> None:
    client = make_client()
    r = submit(client, csv_text(rows(2)), model="nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    for method, path in [("GET", "/jobs/0123"), ("GET", "/jobs/0123/result"), ("DELETE", "/jobs/0123")]:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json()["title"] == "Job Not Found"


def test_cancel_a_queued_and_a_running_job(make_client: AppFactory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    idle = make_client(job_workers=0)
    r = submit(idle, csv_text(rows(6)))
    cancelled = idle.delete(r.headers["location"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert idle.delete(r.headers["location"]).json()["status"] == "cancelled"  # cancelling twice is fine
    assert idle.get(r.headers["location"] + "/result").status_code == 409
    idle.__exit__(None, None, None)

    monkeypatch.setenv("MODELAPI_TEST_DELAY", "0.2")
    client = make_client()
    r = submit(client, csv_text(rows(40)))
    location = r.headers["location"]
    wait_for(client, location, {"running"})
    assert client.delete(location).json()["status"] == "cancelled"
    time.sleep(0.6)  # the worker notices at its next commit and stops
    after = client.get(location).json()
    assert after["status"] == "cancelled" and after["progress"]["rows_done"] < 40
    assert after["finished_at"] is not None


def test_a_finished_job_cannot_be_cancelled(make_client: AppFactory) -> None:
    client = make_client()
    r = submit(client, csv_text(rows(3)))
    wait_for(client, r.headers["location"], {"succeeded"})
    res = client.delete(r.headers["location"])
    assert res.status_code == 409 and "succeeded" in res.json()["detail"]


def test_result_before_the_end_is_409(make_client: AppFactory) -> None:
    client = make_client(job_workers=0)
    r = submit(client, csv_text(rows(3)))
    res = client.get(r.headers["location"] + "/result")
    assert res.status_code == 409 and "queued" in res.json()["detail"]


def test_idempotency_key_returns_the_same_job(make_client: AppFactory) -> None:
    client = make_client(job_workers=0)
    body = csv_text(rows(5))
    first = submit(client, body, {"idempotency-key": "k-1"})
    again = submit(client, body, {"idempotency-key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    other = submit(client, body, {"idempotency-key": "k-2"})
    assert other.json()["id"] != first.json()["id"]
    plain = [submit(client, body).json()["id"] for _ in range(2)]
    assert plain[0] != plain[1]  # no key, no deduplication
    changed = submit(client, csv_text(rows(6)), {"idempotency-key": "k-1"})
    assert changed.status_code == 409 and "Idempotency-Key" in changed.json()["detail"]
    bad = submit(client, body, {"idempotency-key": "has space"})
    assert bad.status_code == 400


def test_a_key_sees_only_its_own_jobs(make_client: AppFactory) -> None:
    client = make_client(keys=True, job_workers=0)
    body = csv_text(rows(3))
    mine = submit(client, body, {"x-test-key": "alice", "idempotency-key": "same"})
    theirs = submit(client, body, {"x-test-key": "bob", "idempotency-key": "same"})
    assert mine.json()["id"] != theirs.json()["id"]  # idempotency keys are per API key
    location = mine.headers["location"]
    assert client.get(location, headers={"x-test-key": "alice"}).status_code == 200
    for method, path in [("GET", location), ("GET", location + "/result"), ("DELETE", location)]:
        r = client.request(method, path, headers={"x-test-key": "bob"})
        assert r.status_code == 404, (method, path)
    assert client.get(location).status_code == 404  # no key at all
    assert client.get(location, headers={"x-test-key": "admin-carol"}).status_code == 200


def test_uploads_as_multipart_parquet_json_and_json_lines(make_client: AppFactory) -> None:
    client = make_client(job_chunk_rows=3)
    records = rows(7)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    uploads = [
        client.post("/models/scorer/jobs", files={"file": ("b.parquet", sink.getvalue(), "application/octet-stream")}),
        client.post("/models/scorer/jobs", files={"file": ("batch.csv", csv_text(records).encode())}),
        client.post("/models/scorer/jobs", json=records),
        submit(client, "\n".join(json.dumps(r) for r in records), {"content-type": "application/x-ndjson"}),
    ]
    results = []
    for r in uploads:
        assert r.status_code == 202, r.text
        assert wait_for(client, r.headers["location"], {"succeeded", "failed"})["status"] == "succeeded"
        results.append(client.get(r.headers["location"] + "/result").json())
    assert all(res == results[0] for res in results)
    assert [row["tag_out"] for row in results[0]] == [f"<{r['tag']}>" for r in records]


def test_multipart_without_a_file_field_is_400(make_client: AppFactory) -> None:
    client = make_client()
    r = client.post("/models/scorer/jobs", data={"other": "x"}, files={"notfile": ("a.csv", b"a,b,tag\n")})
    assert r.status_code == 400 and "'file'" in r.json()["detail"]


def test_a_large_streamed_upload_and_the_upload_limit(make_client: AppFactory) -> None:
    """Uploads have their own limit (max_upload_bytes), above or below the inference routes' max_body_bytes."""
    client = make_client(job_chunk_rows=25_000, max_upload_bytes=8_000_000, max_body_bytes=1000)
    line = "0.123456789,42,some-tag\n"

    def body(lines: int):  # type: ignore[no-untyped-def]
        yield b"a,b,tag\n"
        for _ in range(lines // 10_000):
            yield (line * 10_000).encode()

    r = client.post("/models/scorer/jobs", content=body(200_000), headers=CSV)  # chunked: no Content-Length
    assert r.status_code == 202, r.text
    assert r.json()["progress"]["rows_total"] == 200_000 and r.json()["progress"]["chunks_total"] == 8
    done = wait_for(client, r.headers["location"], {"succeeded", "failed"}, timeout=60)
    assert done["status"] == "succeeded"
    r = client.post("/models/scorer/jobs", content=body(400_000), headers=CSV)
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]
    r = client.post("/models/scorer/jobs", content=b"x" * 9_000_000, headers=CSV)  # declared: refused at once
    assert r.status_code == 413 and "8000000 bytes (max_upload_bytes)" in r.json()["detail"]
    r = client.post(
        "/models/scorer/predict", content=b"[" + b"1," * 1000 + b"1]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "1000 bytes (max_body_bytes)" in r.json()["detail"]


def test_old_jobs_expire_after_the_retention(make_client: AppFactory) -> None:
    client = make_client(job_retention_s=0.5, job_lease_s=1.0)
    r = submit(client, csv_text(rows(3)))
    wait_for(client, r.headers["location"], {"succeeded"})
    deadline = time.monotonic() + 10
    while client.get(r.headers["location"]).status_code != 404:
        assert time.monotonic() < deadline, "the finished job was never deleted"
        time.sleep(0.1)


def test_a_job_is_kept_when_redis_is_unreachable(make_client: AppFactory) -> None:
    client = make_client(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    r = submit(client, csv_text(rows(3)))
    assert r.status_code == 202, r.text
    assert client.get(r.headers["location"]).json()["status"] == "queued"  # stored; re-sent once Redis is back


def test_wrong_method_on_a_job_lists_every_allowed_method(make_client: AppFactory) -> None:
    client = make_client()
    r = client.put("/jobs/anything")
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "DELETE"}
    assert client.delete("/jobs/no-such-job").status_code == 404
    assert client.get("/jobs/no-such-job").status_code == 404
