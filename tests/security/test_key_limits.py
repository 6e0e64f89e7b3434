"""Per-key rate limits and quotas: the flag syntax, the sliding window, the key store (and its migration),
``keys create/update`` and the 429s of an in-process app. Shared across processes with Redis:
tests/security/test_meter_redis.py and tests/e2e/test_key_limits.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from helpers.keys import create_key
from helpers.services import postgres_schema
from modelapi.cli import main
from modelapi.http.app import create_app
from modelapi.security.key_limits import Limit, parse_limit, parse_limits
from modelapi.security.keys import KeyStore
from modelapi.security.meter import LocalMeter, head_checks, row_checks, wait_s
from modelapi.settings import Settings
from toymodels import IrisClassifier

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("100/s", Limit("requests", 100, 1)),
        ("6000/min", Limit("requests", 6000, 60)),
        ("6000 requests / minute", Limit("requests", 6000, 60)),
        ("1000000rows/day", Limit("rows", 1_000_000, 86400)),
        ("1_000_000 rows/d", Limit("rows", 1_000_000, 86400)),
        ("50req/h", Limit("requests", 50, 3600)),
    ],
)
def test_limit_syntax(text: str, limit: Limit) -> None:
    assert parse_limit(text) == limit
    assert parse_limit(limit.spec) == limit  # what `keys list` shows reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100", r"--quota '100': expected COUNT\[rows\|requests\]/s\|min\|h\|day"),
        ("100/week", r"the window is s, min, h or day, not 'week'"),
        ("100bytes/s", r"the unit is 'requests' \(the default\) or 'rows', not 'bytes'"),
        ("0/min", r"the count must be at least 1"),
    ],
)
def test_limit_syntax_errors_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_limit(text, "--quota")


def test_one_limit_per_unit_and_window() -> None:
    with pytest.raises(ValueError, match=r"already has a limit on requests per minute \(10/min\)"):
        parse_limits([("--rate", "10/min"), ("--quota", "20/minute")])
    assert len(parse_limits([("--rate", "10/min"), ("--quota", "20rows/min")])) == 2


def test_sliding_window() -> None:
    meter = LocalMeter()
    limit = Limit("requests", 10, 60)
    checks = head_checks([limit])
    # a fresh window: exactly 10 go through, the 11th waits for the next window
    assert [meter.admit_now("k", checks, 60.0 + i) for i in range(10)] == [None] * 10
    refusal = meter.admit_now("k", checks, 70.0)
    assert refusal is not None and refusal.limit == limit
    assert refusal.wait_s == pytest.approx(50 + 60 * (1 - 9 / 10))  # next window, then 1 of 10 slid out
    assert meter.admit_now("other", checks, 70.0) is None  # another key: its own counters
    # half-way through the next window half of the previous one still weighs: 5 more fit
    results = [meter.admit_now("k", checks, 150.0) for _ in range(6)]
    assert results[:5] == [None] * 5 and results[5] is not None
    # two windows later nothing weighs
    assert all(meter.admit_now("k", checks, 300.0 + i) is None for i in range(10))


def test_rows_are_checked_at_the_head_and_charged_once_known() -> None:
    meter = LocalMeter()
    rows = Limit("rows", 100, 86400)
    assert meter.admit_now("k", head_checks([rows]), 0.0) is None  # the head needs one row left, counts none
    assert meter.admit_now("k", row_checks([rows], 60), 1.0) is None
    refusal = meter.admit_now("k", row_checks([rows], 50), 2.0)  # 60 + 50 > 100: refused, not counted
    assert refusal is not None and refusal.wait_s > 0
    assert meter.admit_now("k", row_checks([rows], 40), 3.0) is None  # exactly 100
    assert meter.admit_now("k", head_checks([rows]), 4.0) is not None  # nothing left: refused at the head
    assert head_checks([rows], rows=False) == []  # a GET carries no rows: a spent row quota does not refuse it
    never = meter.admit_now("j", row_checks([rows], 101), 0.0)
    assert never is not None and math.isinf(never.wait_s)


def test_wait_formula() -> None:
    # the previous window full (10), 30 s into the next with nothing counted: 1 fits once 1/10 slid out
    assert wait_s(10, 1, 0, 10, 0.0, 60.0) == pytest.approx(6.0)
    assert wait_s(10, 1, 10, 0, 30.0, 60.0) == pytest.approx(30 + 6)
    assert wait_s(10, 11, 0, 0, 0.0, 60.0) == math.inf


def test_store_keeps_limits_and_updates_them(tmp_path: Path) -> None:
    key = create_key(tmp_path, "a", limits=("10/min", "500rows/day"))
    store = KeyStore.open(tmp_path, None)
    try:
        principal = store.authenticate(key)
        assert principal.limits == (Limit("requests", 10, 60), Limit("rows", 500, 86400))
        store.set_limits(principal.key_id, (Limit("requests", 5, 1),))
        assert store.authenticate(key).limits == (Limit("requests", 5, 1),)
        store.set_limits(principal.key_id, ())
        assert store.authenticate(key).limits == ()
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with postgres_schema() as url:
            yield url


def test_an_older_store_gains_the_limits_column(tmp_path: Path, database_url: str | None) -> None:
    """A key store written before limits existed: opened by a server or `keys`, it keeps its keys, which have
    no limits, and takes limits from then on; SQLite and PostgreSQL."""
    key = create_key(tmp_path, "old", database_url=database_url)
    store = KeyStore.open(tmp_path, database_url)
    with store.engine.begin() as conn:  # what an older release's table looked like
        conn.execute(text("ALTER TABLE modelapi_api_keys DROP COLUMN limits"))
    store.close()
    existing = KeyStore.existing(tmp_path, database_url)
    assert existing is not None
    try:
        assert existing.authenticate(key).limits == ()
    finally:
        existing.close()
    stores = [KeyStore.open(tmp_path, database_url) for _ in range(2)]  # a second migration finds it there
    try:
        stores[0].set_limits(key.split("_")[1], (Limit("rows", 7, 60),))
        assert stores[1].authenticate(key).limits == (Limit("rows", 7, 60),)
    finally:
        for store in stores:
            store.close()


def test_keys_cli_create_update_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--state-dir", str(tmp_path)]
    assert main(["keys", "create", "--name", "bot", "--rate", "100/s", "--quota", "1000000rows/day", *d]) == 0
    key_id = capsys.readouterr().out.strip().split("_")[1]
    assert main(["keys", "list", *d]) == 0
    assert "limits=100/s,1000000rows/day" in capsys.readouterr().out
    assert main(["keys", "update", f"mk_{key_id}", "--rate", "6000/min", *d]) == 0
    assert capsys.readouterr().out == f"updated mk_{key_id} (bot): limits 6000/min\n"
    assert main(["keys", "list", "--json", *d]) == 0
    assert json.loads(capsys.readouterr().out)["limits"] == ["6000/min"]
    assert main(["keys", "update", key_id, "--no-limits", *d]) == 0
    assert capsys.readouterr().out == f"updated mk_{key_id} (bot): limits none\n"
    assert main(["keys", "update", key_id, *d]) == 2  # neither limits nor --no-limits
    assert "give the new limits (--rate, --quota) or --no-limits" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "x", "--rate", "5/fortnight", *d]) == 2
    assert "--rate '5/fortnight': the window is s, min, h or day" in capsys.readouterr().err


def test_429_names_the_limit(tmp_path: Path) -> None:
    """Without Redis the limits hold in the process: 3 requests a minute, then 429 naming the limit; rows
    charged once decoded, a request that would go over the row quota refused naming it."""
    key = create_key(tmp_path, "a", limits=("3/min", "5rows/day"))
    other = create_key(tmp_path, "b")
    settings = Settings(auth="on", state_dir=tmp_path, rate_limit=0)
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        h = {"authorization": f"Bearer {key}"}
        assert client.post("/models/iris/predict", json=[ROW] * 4, headers=h).status_code == 200
        r = client.post("/models/iris/predict", json=[ROW] * 2, headers=h)  # 4 + 2 rows > 5
        assert r.status_code == 429, r.text
        assert "a request of 2 rows would take API key 'a'" in r.json()["detail"]
        assert "over its quota of 5 rows per day (5rows/day)" in r.json()["detail"]
        assert int(r.headers["retry-after"]) > 3600
        v2 = {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in ROW.items()]}
        assert client.post("/v2/models/iris/infer", headers=h, json=v2).status_code == 200  # 5 rows, 3 requests
        assert client.get("/models/iris", headers=h).status_code == 429  # 3 requests this minute
        r = client.post("/v2/models/iris/infer", headers=h, json=v2)
        assert r.status_code == 429 and "over its rate limit of 3 requests per minute (3/min)" in r.json()["error"]
        assert 1 <= int(r.headers["retry-after"]) <= 120
        assert client.post("/models/iris/predict", json=[ROW] * 9, headers={"x-api-key": other}).status_code == 200
    only_rows = create_key(tmp_path, "c", limits=("2rows/min",))
    never = create_key(tmp_path, "d", limits=("2rows/min",))
    with TestClient(create_app([IrisClassifier()], settings), raise_server_exceptions=False) as client:
        h = {"authorization": f"Bearer {only_rows}"}
        assert client.post("/models/iris/predict", json=[ROW] * 2, headers=h).status_code == 200
        r = client.post("/models/iris/predict", json=ROW, headers=h)  # refused at the head: no row left
        assert r.status_code == 429 and "over its rate limit of 2 rows per minute" in r.json()["detail"]
        assert client.get("/models/iris", headers=h).status_code == 200  # metadata carries no rows
        r = client.post("/models/iris/predict", json=[ROW] * 3, headers={"x-api-key": never})
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
        assert r.json()["detail"] == (
            "a request of 3 rows is more than API key 'd' (mk_" + never.split("_")[1] + ") may send under its rate "
            "limit of 2 rows per minute (2rows/min); send fewer rows per request"
        )
