"""``--workers 2 --enable-management``: a load or unload asked of one worker over HTTP reaches the other within
2 s (the shared desired state, ``repository/shared.py``).

Every probe is a fresh connection, so the kernel (SO_REUSEPORT) hands it to either worker; the worker that
answered is read from ``/proc`` (``helpers.server_process.answering_pid``), and probes must have reached both.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from helpers.keys import create_key
from helpers.model_repo import make_repository
from helpers.server_process import answering_pid

from .server import serve

AGREE_S = 2.0
PROBES = 40


def _probe(url: str, workers: list[int], auth: dict[str, str]) -> tuple[int, str | None, int | None]:
    """A prediction of ``m`` on a new connection: (status, Model-Version, pid of the worker that answered)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        body = json.dumps({"x": 0.0})
        conn.request("POST", "/models/m/predict", body, {"content-type": "application/json", **auth})
        r = conn.getresponse()
        r.read()
        assert conn.sock is not None
        pid = answering_pid(conn.sock, workers)  # the connection is still open (keep-alive)
    finally:
        conn.close()
    return r.status, r.getheader("model-version"), pid


def _agree(url: str, workers: list[int], auth: dict[str, str], since: float, *, loaded: bool) -> float:
    """Probe until PROBES fresh connections in a row, reaching both workers, show the model ``loaded`` (200 from
    version 1) or not (404/503); no probe may disagree later than AGREE_S after ``since``. Returns when the last
    disagreeing probe came (seconds after ``since``; 0: none)."""
    run: list[tuple[int, str | None, int | None]] = []
    last_wrong = 0.0
    while len(run) < PROBES or {a[2] for a in run} != set(workers):
        answer = _probe(url, workers, auth)
        now = time.monotonic() - since
        agrees = (answer[0] == 200 and answer[1] == "1") if loaded else answer[0] in (404, 503)
        if agrees:
            run.append(answer)
            assert len(run) < 10 * PROBES, f"answers came only from { ({a[2] for a in run}) }, workers are {workers}"
            continue
        assert now < AGREE_S, f"{now:.2f} s after the change a fresh connection still got {answer}"
        run, last_wrong = [], now
    return last_wrong


def test_two_workers_agree_within_two_seconds_after_an_unload_and_a_load(tmp_path: Path) -> None:
    key = create_key(Path(os.environ["MODELAPI_STATE_DIR"]), scope="admin")
    auth = {"Authorization": f"Bearer {key}"}
    repo = make_repository(tmp_path / "repo", {"m": [1], "other": [1]})
    with serve(str(repo), "--workers", "2", "--enable-management", tmp_dir=tmp_path) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        # both workers have loaded m before anything is asked of them
        _agree(server.url, workers, auth, time.monotonic() - AGREE_S, loaded=True)

        with httpx.Client(base_url=server.url, headers=auth, timeout=30.0) as admin:
            r = admin.post("/v2/repository/models/m/unload")
            assert r.status_code == 200, r.text
            unloaded_at = time.monotonic()
            late = _agree(server.url, workers, auth, unloaded_at, loaded=False)
            print(f"unload: last disagreeing probe {late:.2f} s after the answer")
            # the other model is untouched, and the index on either worker says m is unloaded
            for _ in range(10):
                with httpx.Client(base_url=server.url, headers=auth) as fresh:
                    assert fresh.post("/models/other/predict", json={"x": 0.0}).status_code == 200
                    rows = {r["name"]: r for r in fresh.post("/v2/repository/index").json()}
                    assert rows["m"]["state"] == "UNAVAILABLE" and rows["other"]["state"] == "READY", rows

            r = admin.post("/v2/repository/models/m/load")
            assert r.status_code == 200, r.text
            loaded_at = time.monotonic()
            late = _agree(server.url, workers, auth, loaded_at, loaded=True)
            print(f"load: last disagreeing probe {late:.2f} s after the answer")
        assert server.worker_pids() == workers  # no worker died on the way
