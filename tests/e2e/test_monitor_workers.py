"""``--workers 2 --log-predictions 1``: both workers log into one Parquet dataset (their pids in the file names and
rows), and ``GET /models/{name}/monitor`` shows the whole log whichever worker answers."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from modelapi.monitor.parquet import ParquetStore

from .server import serve

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def fresh(url: str, method: str, path: str, body: dict[str, float] | None = None) -> tuple[int, bytes]:
    """One request on a new connection, so the kernel may hand it to either worker."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"content-type": "application/json", "connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_two_workers_log_into_one_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ("toymodels:IrisClassifier", "--name", "iris", "--workers", "2", "--state-dir", str(state))
    store = ParquetStore(state / "predictions")
    with serve(*args, "--log-predictions", "1", "--log-flush", "0.2", tmp_dir=tmp_path) as server:
        workers = set(server.worker_pids())
        assert len(workers) == 2
        sent = 0
        deadline = time.monotonic() + 90
        with ThreadPoolExecutor(8) as pool:
            while True:
                answers = pool.map(lambda _: fresh(server.url, "POST", "/models/iris/predict", ROW), range(40))
                statuses = [status for status, _ in answers]
                assert statuses == [200] * 40
                sent += 40
                time.sleep(0.5)
                pids = set(store.read("iris")["pid"].to_pylist()) if store.models() else set()
                if pids == workers or time.monotonic() > deadline:
                    break
        assert pids == workers, f"pids in the log {pids}, workers {workers}"
        while store.read("iris").num_rows < sent:
            assert time.monotonic() < deadline + 30, f"{store.read('iris').num_rows} of {sent} rows logged"
            time.sleep(0.2)
        files = {p.name.split("-")[1] for p in (state / "predictions" / "rows").rglob("part-*.parquet")}
        assert files == {str(p) for p in workers}  # one dataset, each worker's files named by its pid
        totals = set()
        for _ in range(6):
            status, body = fresh(server.url, "GET", "/models/iris/monitor")
            assert status == 200, body
            totals.add(json.loads(body)["versions"]["1"]["last_day"]["rows"])
        assert totals == {sent}
