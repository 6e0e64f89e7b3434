"""Job uploads: Content-Encoding, the temporary files, and the event loop staying free while an upload is written."""

from __future__ import annotations

import gzip
import tempfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers.jobmodels import csv_text, rows
from helpers.jobs import AppFactory, wait_for
from modelapi.protocols.jobs import routes as routes_jobs

CSV = {"content-type": "text/csv"}


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where uploads are spooled during the test, so it can check that none is left behind."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def result_of(client: Any, r: Any) -> Any:
    assert r.status_code == 202, r.text
    assert wait_for(client, r.headers["location"], {"succeeded", "failed"})["status"] == "succeeded"
    return client.get(r.headers["location"] + "/result").json()


def test_a_compressed_upload_runs_as_the_plain_one(make_client: AppFactory, temp_dir: Path) -> None:
    client = make_client()
    body = csv_text(rows(9)).encode()
    plain = result_of(client, client.post("/models/scorer/jobs", content=body, headers=CSV))
    for coding, packed in [("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))]:
        r = client.post("/models/scorer/jobs", content=packed, headers={**CSV, "content-encoding": coding})
        assert result_of(client, r) == plain
    halves = gzip.compress(body[:50]) + gzip.compress(body[50:])  # two gzip members, as `cat a.gz b.gz` makes
    assert (
        result_of(
            client, client.post("/models/scorer/jobs", content=halves, headers={**CSV, "content-encoding": "gzip"})
        )
        == plain
    )
    assert list(temp_dir.iterdir()) == []


def test_compressed_upload_errors(make_client: AppFactory, temp_dir: Path) -> None:
    client = make_client(max_upload_bytes=100_000)

    def post(body: bytes, coding: str, **extra: Any) -> Any:
        return client.post("/models/scorer/jobs", content=body, headers={**CSV, "content-encoding": coding}, **extra)

    bomb = gzip.compress(b"a,b,tag\n" + b"1,2,x\n" * 1_000_000)  # 6 MB of CSV in about 25 kB
    r = post(bomb, "gzip")
    assert r.status_code == 413 and "decompressed request body is larger than the limit of 100000 bytes" in r.text
    r = post(b"a,b,tag\n", "br")
    assert r.status_code == 415 and r.headers["accept-encoding"] == "gzip, deflate"
    r = post(b"not gzip", "gzip")
    assert r.status_code == 400 and "not valid gzip data" in r.text
    r = post(gzip.compress(csv_text(rows(3)).encode())[:-4], "gzip")
    assert r.status_code == 400 and "truncated gzip data" in r.text
    r = client.post(
        "/models/scorer/jobs",
        files={"file": ("batch.csv", gzip.compress(csv_text(rows(3)).encode()))},
        headers={"content-encoding": "gzip"},
    )
    assert r.status_code == 415 and "multipart upload cannot have a Content-Encoding" in r.text
    assert list(temp_dir.iterdir()) == []


def test_the_event_loop_serves_other_requests_while_an_upload_is_written(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write waits until a health check has been answered: were it on the event loop, nothing could be."""
    client = make_client(job_workers=0)
    writing, answered = threading.Event(), threading.Event()
    waited: list[bool] = []
    append = routes_jobs._append

    def blocking_append(*args: Any) -> None:
        writing.set()
        waited.append(answered.wait(10))
        append(*args)

    monkeypatch.setattr(routes_jobs, "_append", blocking_append)
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(client.post, "/models/scorer/jobs", content=csv_text(rows(5)), headers=CSV)
        assert writing.wait(10)
        assert client.get("/v2/health/live").status_code == 200
        answered.set()
        r = upload.result(timeout=30)
    assert r.status_code == 202, r.text
    assert waited == [True]
