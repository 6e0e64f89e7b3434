"""Job uploads: the event loop stays free while an upload is written."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from jobhelpers import AppFactory, wait_for
from jobmodels import csv_text, rows

from modelapi.http import routes_jobs

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
