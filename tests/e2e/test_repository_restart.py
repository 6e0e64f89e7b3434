"""``kill -9`` of a server that serves a model repository, under load, then a restart on the same directory: it
serves what it served before (versions, default, labels, canary share), whatever the kill interrupted."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from helpers.model_repo import make_repository, model_bytes, publish_version
from helpers.server_process import SessionServer, kill_group, serve_in_session

CONFIG = """\
version_policy = "all"
canary_percent = 25
[labels]
stable = 2
canary = 3
"""


def _what_is_served(url: str) -> dict[str, Any]:
    """What a client can see of model ``m``: its summary, its status, and which version each route answers with."""
    with httpx.Client(base_url=url, timeout=10.0) as http:
        summary = http.get("/models/m").json()
        status = http.get("/v1/models/m").json()
        answered: dict[str, str] = {}
        for route in ["/models/m/labels/stable/predict", "/models/m/labels/canary/predict"] + [
            f"/models/m/versions/{v['version']}/predict" for v in summary["versions"]
        ]:
            r = http.post(route, json={"x": 0.0})
            assert r.status_code == 200, (route, r.text)
            assert r.json()["prediction"] == int(r.headers["model-version"])
            answered[route] = r.headers["model-version"]
        index = http.get("/models").json()
    return {
        "versions": summary["versions"],
        "default_version": summary["default_version"],
        "labels": summary.get("labels"),
        "canary_percent": summary.get("canary_percent"),
        "status": status["model_version_status"],
        "answered": answered,
        "models": [m["name"] for m in index["models"]],
    }


def _load_then_kill(server: SessionServer, repo: Path, half_written: int) -> None:
    """Eight clients send predictions; while they do, a version is half copied in; then SIGKILL to the group."""
    stop = threading.Event()
    answered = [0]

    def client() -> None:
        with httpx.Client(timeout=5.0) as http:
            while not stop.is_set():
                try:
                    r = http.post(server.url + "/models/m/predict", json={"x": 0.0})
                except httpx.HTTPError:
                    continue  # the kill: refused and reset connections are expected
                if r.status_code == 200:
                    answered[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    # half-written when the kill comes: a version still being copied in (never renamed into place)
    staging = repo / "m" / f"{half_written}.tmp"
    staging.mkdir()
    (staging / "model.skops").write_bytes(model_bytes(half_written)[:200])
    time.sleep(1.0)
    try:
        assert answered[0] > 0, server.log()
    finally:
        kill_group(server)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert server.process.returncode == -9


def test_a_server_killed_under_load_serves_the_same_versions_after_a_restart(tmp_path: Path) -> None:
    """Two workers and their supervisor SIGKILLed at once under load; restarted (with one worker) on the same
    directory and port, the server serves what it served before."""
    repo = make_repository(tmp_path / "repo", {"m": [1, 2, 3], "other": [1]}, {"m": CONFIG})

    def args(workers: int) -> tuple[str, ...]:
        return (str(repo), "--watch", "--workers", str(workers))

    with serve_in_session(*args(2), tmp_dir=tmp_path) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        # a version published while the server runs is served too, by both workers
        publish_version(repo, "m", 4)
        deadline = time.monotonic() + 15
        while not all(_fresh_status(server.url, "/models/m/versions/4/predict") == 200 for _ in range(10)):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        before = _what_is_served(server.url)
        assert before["default_version"] == "2" and before["labels"] == {"stable": "2", "canary": "3"}, before
        assert before["canary_percent"] == 25, before
        assert [v["version"] for v in before["versions"]] == ["1", "2", "3", "4"], before
        _load_then_kill(server, repo, 5)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived the kill"

    with serve_in_session(*args(1), tmp_dir=tmp_path, port=server.port) as again:
        assert _what_is_served(again.url) == before, again.log()


def _fresh_status(url: str, path: str) -> int:
    """A prediction's status on a new connection (so either worker may answer)."""
    return httpx.post(url + path, json={"x": 0.0}, headers={"connection": "close"}).status_code
