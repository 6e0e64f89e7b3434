"""The operations port (``--metrics-port``) of a real server: the health routes answer there as on the main port
while the models load, once they have, and while the server drains, without a key; nothing else is served there.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.keys import cli_create_key
from helpers.ports import free_port

from .server import serve

LIVE, READY = "/v2/health/live", "/v2/health/ready"


def _answer(url: str) -> tuple[int, Any]:
    """One GET on a connection of its own, as the kubelet's probes send them."""
    r = httpx.get(url, headers={"connection": "close"}, timeout=5)
    return r.status_code, r.json()


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("workers", [1, 2])
def test_health_answers_as_on_the_main_port_while_loading_serving_and_draining(workers: int, tmp_path: Path) -> None:
    gate = tmp_path / "loaded"
    ops_port = free_port()
    ops = f"http://127.0.0.1:{ops_port}"
    args = ("toymodels:GatedLoad", "--workers", str(workers), "--metrics-port", str(ops_port))
    env = {"TOY_LOAD_GATE": str(gate)}
    with serve(*args, env=env, tmp_dir=tmp_path, until=LIVE) as server:
        # the models load: live, not ready, on both ports
        for path, expected in ((LIVE, (200, {"live": True})), (READY, (503, {"ready": False}))):
            assert _answer(server.url + path) == expected
            assert _answer(ops + path) == expected

        gate.touch()
        deadline = time.monotonic() + 30
        while _answer(ops + READY)[0] != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        for path, expected in ((LIVE, (200, {"live": True})), (READY, (200, {"ready": True}))):
            assert _answer(server.url + path) == expected
            assert _answer(ops + path) == expected

        # a slow request in flight holds the drain open while the probes ask
        client = httpx.Client(base_url=server.url, timeout=30)
        assert client.get(READY).status_code == 200  # its connection is accepted before SIGTERM
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(client.post("/predict", json={"seconds": 2.0}).status_code)
        )
        slow.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1
        while _answer(ops + READY)[0] != 503:
            assert time.monotonic() < deadline, "the operations port still says ready 1 s after SIGTERM"
            time.sleep(0.05)
        # draining: not ready, still live, answered on the operations port while the main one refuses connections
        assert _answer(ops + READY) == (503, {"ready": False})
        assert _answer(ops + LIVE) == (200, {"live": True})
        main_port = int(server.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 1
        while not _refused(main_port):
            assert time.monotonic() < deadline, "the main port still accepts 1 s after SIGTERM"
            time.sleep(0.05)
        assert slow.is_alive(), "the request ended before the drain was observed; the test proves nothing"
        slow.join(30)
        client.close()
        assert answers == [200]
        assert server.process.wait(timeout=30) == 0, server.log()


def test_only_metrics_and_health_are_served_there_and_without_a_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state)  # a key in the store: authentication is on
    ops_port = free_port()
    ops = f"http://127.0.0.1:{ops_port}"
    args = ("toymodels:Sleepy", "--state-dir", str(state), "--metrics-port", str(ops_port))
    with serve(*args, tmp_dir=tmp_path) as server:
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(server.url + "/predict", json={"seconds": 0.0}).status_code == 401
        assert httpx.post(server.url + "/predict", json={"seconds": 0.0}, headers=auth).status_code == 200

        r = httpx.get(ops + READY)
        assert (r.status_code, r.json(), r.headers["content-type"]) == (200, {"ready": True}, "application/json")
        assert r.headers["cache-control"] == "no-store"
        assert httpx.get(ops + LIVE).json() == {"live": True}
        assert httpx.head(ops + LIVE).status_code == 200
        assert httpx.get(ops + "/metrics").status_code == 200
        assert httpx.post(ops + LIVE).status_code == 405
        # the inference, metadata and management routes are the main port's alone, with a key or without
        for method, path in (
            ("POST", "/predict"),
            ("POST", "/v2/models/sleepy/infer"),
            ("GET", "/v2/models/sleepy"),
            ("GET", "/v2/models/sleepy/ready"),
            ("GET", "/v2/health/live/"),
            ("GET", "/models"),
            ("GET", "/docs"),
            ("GET", "/"),
        ):
            r = httpx.request(method, ops + path, json={"seconds": 0.0}, headers=auth)
            assert r.status_code == 404, (method, path, r.status_code)
