"""``GET /metrics`` of a real server: the same totals from every worker, after a worker is killed, and the
``--metrics-port`` listener without a key while the main port needs one."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from helpers.keys import cli_create_key
from helpers.metrics import matching, parse
from helpers.ports import free_port

from .server import serve

SLEEPY = "toymodels:Sleepy"


def _fresh(url: str, method: str, path: str, body: dict[str, float] | None = None) -> tuple[int, bytes]:
    """One request on a new connection, so the kernel may give it to either worker."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, payload, {"content-type": "application/json", "connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _answered(url: str) -> float:
    status, text = _fresh(url, "GET", "/metrics")
    assert status == 200, text
    return sum(matching(parse(text), "modelapi_requests_total", model="sleepy", code="2xx").values())


def _samples(url: str) -> dict:  # type: ignore[type-arg]
    status, text = _fresh(url, "GET", "/metrics")
    assert status == 200, text
    return parse(text)


def test_every_worker_answers_the_same_totals_also_after_one_is_killed(tmp_path: Path) -> None:
    n = 40
    with serve(SLEEPY, "--workers", "2", tmp_dir=tmp_path) as server:
        pids = set()
        for _ in range(n):
            status, text = _fresh(server.url, "POST", "/predict", {"seconds": 0.0})
            assert status == 200, text
            pids.add(int(json.loads(text)["pid"]))
        assert len(pids) == 2, "fresh connections should reach both workers"
        time.sleep(1.5)  # each worker pushes its tallies into the shared files at least once a second
        assert [_answered(server.url) for _ in range(8)] == [n] * 8

        victim, survivor = server.worker_pids()
        assert matching(_samples(server.url), "modelapi_process_cpu_seconds", pid=str(victim))
        # slow calls in flight on both workers when the victim dies
        results: list[int] = []

        def slow() -> None:
            try:
                results.append(_fresh(server.url, "POST", "/predict", {"seconds": 3.0})[0])
            except (OSError, http.client.HTTPException):  # the victim's: the connection died with it
                results.append(-1)

        threads = [threading.Thread(target=slow) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        in_flight = matching(_samples(server.url), "modelapi_requests_in_flight", model="sleepy")
        assert sum(in_flight.values()) == 4
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = server.worker_pids()
            if len(now) == 2 and victim not in now and httpx.get(server.url + "/v2/health/ready").status_code == 200:
                break
            time.sleep(0.1)
        replacement = (set(server.worker_pids()) - {survivor}).pop()
        time.sleep(1.5)
        ok = results.count(200)  # the survivor's slow calls; the victim's died with it
        assert len(results) == 4 and ok < 4
        for _ in range(8):
            s = _samples(server.url)
            assert sum(matching(s, "modelapi_requests_total", model="sleepy", code="2xx").values()) == n + ok
            assert sum(matching(s, "modelapi_requests_in_flight", model="sleepy").values()) == 0
            assert not matching(s, "modelapi_process_cpu_seconds", pid=str(victim))
            assert matching(s, "modelapi_process_cpu_seconds", pid=str(replacement))
            assert sum(matching(s, "modelapi_model_state", model="sleepy", state="READY").values()) == 2


def test_the_metrics_port_needs_no_key_while_the_main_port_does(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state)  # a key in the store: loopback turns authentication on
    admin = cli_create_key(state, "--scope", "admin")
    port = free_port()
    args = ("--state-dir", str(state), "--workers", "2", "--metrics-port", str(port))
    with serve(SLEEPY, *args, tmp_dir=tmp_path, timeout=90) as server:
        r = httpx.post(server.url + "/predict", json={"seconds": 0.0}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert httpx.get(server.url + "/metrics").status_code == 401
        # served on the metrics port instead, not on the main one, whatever the key
        assert httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 404
        metrics_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 5
        while True:
            r = httpx.get(metrics_url + "/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
            total = sum(matching(parse(r.text), "modelapi_requests_total", model="sleepy", code="2xx").values())
            if total == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == 1
        assert httpx.get(metrics_url + "/predict").status_code == 404
