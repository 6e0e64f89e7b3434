"""What the client raises carries the server's message, status and request id, in every error style."""

from __future__ import annotations

import io
import random

import httpx
import pytest
from clientfakes import ROW, SEED, FakeTime, Script, problem

from modelapi import (
    AuthenticationError,
    BadRequestError,
    Client,
    ClientError,
    ClientTimeoutError,
    ConflictError,
    HTTPStatusError,
    JobFailedError,
    NotFoundError,
    ServerError,
)

URL = "http://modelapi.test"


def client(script: Script, fake: FakeTime | None = None) -> Client:
    fake = fake or FakeTime()
    return Client(URL, transport=script.transport(), sleep=fake.sleep, clock=fake.clock, rng=random.Random(SEED))


def test_problem_json_gives_detail_status_and_request_id() -> None:
    detail = "record 0: 'sepal_width' expected a number, got string 'x'"
    with client(Script([problem(400, detail, "8f11")])) as c, pytest.raises(BadRequestError) as info:
        c.predict("iris", ROW)
    err = info.value
    assert (err.status, err.message, err.request_id) == (400, detail, "8f11")
    assert str(err) == f"400 Bad Request: {detail} (POST /models/iris/predict, request id 8f11)"
    assert err.body["title"] == "t" and isinstance(err, HTTPStatusError) and isinstance(err, ClientError)


def test_the_open_inference_protocol_error_style() -> None:
    answer = httpx.Response(400, json={"error": "input 'x': datatype FP64 given", "request_id": "body-id"})
    with client(Script([answer])) as c, pytest.raises(BadRequestError) as info:
        c.infer("iris", {"x": [1.0]})
    assert info.value.message == "input 'x': datatype FP64 given" and info.value.request_id == "body-id"
    assert info.value.path == "/v2/models/iris/infer"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (502, ServerError),
        (418, HTTPStatusError),
    ],
)
def test_the_status_picks_the_class(status: int, cls: type[HTTPStatusError]) -> None:
    with client(Script([httpx.Response(status, text="plain words")])) as c, pytest.raises(cls) as info:
        c.models()
    assert info.value.message == "plain words" and info.value.status == status and info.value.request_id is None


def test_an_answer_that_is_not_json_is_named() -> None:
    with client(Script([httpx.Response(200, text="<html>")])) as c, pytest.raises(ClientError, match="not JSON"):
        c.models()


def _job(status: str, done: int, **extra: object) -> dict[str, object]:
    return {"id": "j1", "model": "iris", "status": status, "progress": {"rows_done": done, "rows_total": 4}, **extra}


def test_a_failed_job_raises_with_the_servers_reason_and_the_bar_shows_progress() -> None:
    reason = {"detail": "row 3, column 'petal_width' expected a number, got string 'x'", "row": 3}
    script = Script(
        [
            httpx.Response(202, json=_job("queued", 0), headers={"location": "/jobs/j1"}),
            httpx.Response(200, json=_job("running", 2)),
            httpx.Response(200, json=_job("failed", 2, error={**reason, "column": "petal_width"})),
        ]
    )
    fake, bar = FakeTime(), io.StringIO()
    with client(script, fake) as c:
        job = c.submit_job("iris", [ROW] * 4)
        with pytest.raises(JobFailedError) as info:
            job.wait(progress=bar)
    assert str(info.value) == f"job j1 failed: {reason['detail']}"
    assert (info.value.row, info.value.column, info.value.status) == (3, "petal_width", "failed")
    assert "running   [###############               ]  50.0% 2/4 rows" in bar.getvalue()
    assert bar.getvalue().endswith("\n") and job.info["status"] == "failed"
    assert fake.sleeps == [0.1]  # polls start fast; the wait between them grows


def test_waiting_past_the_timeout_leaves_the_job_running() -> None:
    script = Script([httpx.Response(200, json=_job("running", 1)) for _ in range(30)])
    fake = FakeTime()
    with client(script, fake) as c:
        job = c.job("j1")
        with pytest.raises(ClientTimeoutError, match="still running after 3 s"):
            job.wait(progress=False, timeout=3.0)
    assert sum(fake.sleeps) <= 3.0 and max(fake.sleeps) <= 1.0


def test_predict_checks_the_data_before_sending() -> None:
    with client(Script([])) as c:
        with pytest.raises(TypeError, match="expected a dict, a list of dicts"):
            c.predict("iris", "sepal_length=5")
        with pytest.raises(TypeError, match=r"data\[1\]: expected a dict"):
            c.predict("iris", [ROW, 5])
        with pytest.raises(ValueError, match=r"expected a \.csv"):
            c.submit_job("iris", "rows.txt")
