"""A real Prometheus (Debian's ``prometheus``) scrapes a 2-worker modelapi under a constant load: PromQL's total
and request rate agree with what the client sent within 5 %.

The test starts ``prometheus`` on a free loopback port with a generated config (scrape every second, the
``--metrics-port`` target, its TSDB in the test's tmp directory), sends requests at a fixed pace on fresh
connections (so both workers serve them), then asks Prometheus' HTTP API. Without ``prometheus`` installed
it skips, except with ``CI=true``, where it fails (``.ci/run`` installs it).

Why the rate check is robust: a worker flushes its tallies into the shared files once a second, so a scrape
that the other worker answers may lag by up to a second of half the traffic (more on a busy machine, where a
flush can come late). A 12 s window inside the 19 s of load keeps the ordinary lag under 5 %, and the median
over five windows a scrape apart keeps one late flush from deciding. The total is read 3 s after the load,
when every worker has flushed: it is exact.

Every query of the Grafana dashboard (docs/grafana/modelapi-dashboard.json) is then run against the same
Prometheus: all are valid PromQL, and those about what the load produced have data.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.ports import free_port

from .server import TESTS_DIR, serve

DASHBOARD = TESTS_DIR.parent / "docs" / "grafana" / "modelapi-dashboard.json"

SLEEPY = "toymodels:Sleepy"
RATE = 40.0  # requests per second, paced
LOAD_S = 19.0  # seconds of load
THREADS = 4  # senders; each keeps its share of the pace
WINDOW_S = 12  # the rate() window, inside the load: the last ends EDGE_S before the load does
EDGE_S = 1.5
SHIFTS = 5  # windows, each a second (a scrape) earlier than the one before
TOLERANCE = 0.05
#: dashboard queries this run gives no data: no errors, rejections, reloads, load failures or jobs submitted
NO_DATA_HERE = (
    'code!="2xx"',
    "_rejected_",
    "_reloads_",
    "_load_failures_",
    "_jobs_submitted_",
    "_jobs_finished_",
    "_jobs_rows_",
    "_prediction_",  # the prediction log and drift: off in this run (tests/monitor covers them)
    "_feature_",
)


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is required in CI (.ci/run installs it: apt-get install prometheus)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return path


@contextlib.contextmanager
def run_prometheus(binary: str, target: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus on a free loopback port scraping ``target`` (host:port) every second, until ready."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: modelapi\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    log_path = tmp_path / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/-/ready", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def instant(prometheus: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """The result of an instant query (a failed one fails the test with Prometheus' answer)."""
    params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    body: dict[str, Any] = httpx.get(prometheus + "/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def query(prometheus: str, promql: str, at: float | None = None) -> float:
    """The value of an instant query that must give one sample."""
    result = instant(prometheus, promql, at)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of the Grafana dashboard, its variables as Grafana fills them
    with every value chosen (``.*``) and ``$__rate_interval`` as 10 s."""
    board = json.loads(DASHBOARD.read_text())
    stack = list(board["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "10s")
            yield panel["title"], re.sub(r"\$(instance|model|version)\b", ".*", expr)


def target_up(prometheus: str) -> bool:
    body = httpx.get(prometheus + "/api/v1/targets", timeout=5).json()
    active = body["data"]["activeTargets"]
    return bool(active) and all(t["health"] == "up" for t in active)


def predict(host: str, port: int) -> int:
    """One request on a new connection (so the kernel may give it to either worker); the serving pid."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/predict", json.dumps({"seconds": 0.0}), {"content-type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body
        return int(json.loads(body)["pid"])
    finally:
        conn.close()


def paced_load(host: str, port: int) -> tuple[list[float], set[int]]:
    """``RATE`` requests a second for ``LOAD_S`` seconds; the Unix times at which each was answered, sorted."""
    total = int(RATE * LOAD_S)
    start = time.time() + 0.2
    done: list[float] = []
    pids: set[int] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        try:
            for i in range(k, total, THREADS):
                delay = start + i / RATE - time.time()
                if delay > 0:
                    time.sleep(delay)
                pid = predict(host, port)
                with lock:
                    done.append(time.time())
                    pids.add(pid)
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_S + 30)
    assert not errors, errors
    return sorted(done), pids


def test_prometheus_agrees_with_the_client_on_total_and_rate(tmp_path: Path) -> None:
    binary = prometheus_binary()
    metrics_port = free_port()
    server_args = ("--workers", "2", "--metrics-port", str(metrics_port))
    with (
        serve(SLEEPY, *server_args, tmp_dir=tmp_path) as server,
        run_prometheus(binary, f"127.0.0.1:{metrics_port}", tmp_path) as prometheus,
    ):
        deadline = time.monotonic() + 10
        while not target_up(prometheus):  # scraped at least once before the load starts
            assert time.monotonic() < deadline, httpx.get(prometheus + "/api/v1/targets").text
            time.sleep(0.2)
        port = int(server.url.rsplit(":", 1)[1])
        answered, pids = paced_load("127.0.0.1", port)
        assert len(answered) == int(RATE * LOAD_S)
        assert len(pids) == 2, "fresh connections should reach both workers"
        # every worker has flushed (once a second) and Prometheus has scraped since (every second)
        time.sleep(3.0)

        sent = len(answered)
        total = query(prometheus, 'sum(modelapi_requests_total{model="sleepy", code="2xx"})')
        assert abs(total - sent) <= TOLERANCE * sent, (total, sent)

        # the rate over windows inside the load, each against the client's own count in the same window; the
        # median of five windows a scrape apart, so one late flush (a busy machine) at one scrape does not decide
        promql = f'sum(rate(modelapi_requests_total{{model="sleepy", code="2xx"}}[{WINDOW_S}s]))'
        ratios: dict[str, list[float]] = {"rate": [], "increase": []}
        for k in range(SHIFTS):
            end = answered[-1] - EDGE_S - k
            begin = end - WINDOW_S
            assert begin > answered[0] + 1.0, "the rate windows must lie inside the load"
            client_rate = sum(begin < t <= end for t in answered) / WINDOW_S
            ratios["rate"].append(query(prometheus, promql, at=end) / client_rate)
            increase = query(prometheus, promql.replace("rate(", "increase("), at=end)
            ratios["increase"].append(increase / WINDOW_S / client_rate)
        for what, found in ratios.items():
            assert abs(statistics.median(found) - 1) <= TOLERANCE, (what, found)

        # every query of the Grafana dashboard is valid PromQL, and has data unless this run made none for it
        empty = [title for title, expr in dashboard_queries() if not instant(prometheus, expr, at=answered[-1])]
        expected = [title for title, expr in dashboard_queries() if any(w in expr for w in NO_DATA_HERE)]
        assert sorted(empty) == sorted(expected)
