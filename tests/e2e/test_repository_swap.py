"""``modelapi serve DIR --watch`` against the real server: new versions swap in under load, broken ones never
take traffic.

The models are tiny scikit-learn classifiers that predict their own version number (``helpers.model_repo``),
so every answer's content says which version produced it, and must agree with its ``Model-Version`` header.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from helpers.keys import create_key
from helpers.model_repo import make_repository, publish_corrupt_version, publish_version

from .server import serve

CONNECTIONS = 16
LOAD_S = 10.0
NEW_VERSIONS = range(2, 7)
EVERY_S = 1.5


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check()`` until it returns something truthy; that value, or AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s; last: {last!r}")


def test_new_versions_swap_in_under_load_without_a_failed_request(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", {"m": [1]})
    with serve(str(repo), "--watch", tmp_dir=tmp_path) as server:
        url = server.url + "/models/m/predict"
        answers: list[list[tuple[float, int, str | None, Any]]] = [[] for _ in range(CONNECTIONS)]
        errors: list[str] = []
        stop = threading.Event()
        start = threading.Barrier(CONNECTIONS + 1)

        def client(i: int) -> None:
            with httpx.Client(timeout=10.0) as http:  # one keep-alive connection per client
                start.wait()
                while not stop.is_set():
                    try:
                        r = http.post(url, json={"x": 0.0})
                    except httpx.HTTPError as exc:
                        errors.append(f"connection {i}: {type(exc).__name__}: {exc}")
                        continue
                    body = r.json() if r.status_code == 200 else r.text
                    answers[i].append((time.monotonic(), r.status_code, r.headers.get("model-version"), body))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        start.wait()
        began = time.monotonic()
        published: dict[int, float] = {}
        time.sleep(1.0)
        for version in NEW_VERSIONS:
            publish_version(repo, "m", version)
            published[version] = time.monotonic() - began
            time.sleep(EVERY_S)
        time.sleep(max(0.0, LOAD_S - (time.monotonic() - began)))
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in threads)

        assert not errors, errors[:5]
        flat = [a for per in answers for a in per]
        bad = [a for a in flat if a[1] != 200]
        assert not bad, f"{len(bad)} of {len(flat)} answers were not 200, e.g. {bad[:3]}"
        # every answer comes from one whole version: its content is the version its header names
        mixed = [a for a in flat if a[2] is None or a[3]["prediction"] != int(a[2])]
        assert not mixed, f"{len(mixed)} answers disagree with their Model-Version, e.g. {mixed[:3]}"
        for i, per in enumerate(answers):
            versions = [int(a[2]) for a in per]  # type: ignore[arg-type]
            assert versions, f"connection {i} got no answer"
            backwards = [(a, b) for a, b in itertools.pairwise(versions) if b < a]
            assert not backwards, f"connection {i} went back from version {backwards[0][0]} to {backwards[0][1]}"
            assert versions[-1] == 6, f"connection {i} still on version {versions[-1]} at the end"
        seen = {int(a[2]) for a in flat}  # type: ignore[arg-type]
        assert seen == {1, *NEW_VERSIONS}, f"versions seen {sorted(seen)}; published at {published}"
        assert len(flat) > 200 * LOAD_S / 10, f"only {len(flat)} answers in {LOAD_S} s"

        # the default policy (latest = 1) leaves only the newest version loaded
        def only_six() -> Any:
            status = httpx.get(server.url + "/v1/models/m").json()
            return status if status["model_version_status"] == [{"version": "6", "state": "AVAILABLE"}] else None

        _wait_for(only_six, 10, "only version 6 in /v1/models/m")
        summary = httpx.get(server.url + "/models/m").json()
        assert summary["default_version"] == "6"
        assert summary["versions"] == [{"version": "6", "state": "READY"}]
        for version in range(1, 6):
            r = httpx.post(f"{server.url}/models/m/versions/{version}/predict", json={"x": 0.0})
            assert r.status_code == 404, (version, r.text)
        assert server.process.poll() is None


def test_a_broken_version_is_unavailable_with_a_reason_and_traffic_stays_on_the_previous(tmp_path: Path) -> None:
    key = create_key(Path(os.environ["MODELAPI_STATE_DIR"]), scope="admin")
    auth = {"Authorization": f"Bearer {key}"}
    repo = make_repository(tmp_path / "repo", {"m": [1]})
    with serve(str(repo), "--watch", "--enable-management", tmp_dir=tmp_path) as server:
        with httpx.Client(base_url=server.url, headers=auth, timeout=10.0) as http:
            before = http.post("/models/m/predict", json={"x": 0.0})
            assert before.status_code == 200 and before.headers["model-version"] == "1"

            publish_corrupt_version(repo, "m", 2)

            def unavailable() -> Any:
                rows = http.post("/v2/repository/index").json()
                row = next((r for r in rows if r["name"] == "m" and r["version"] == "2"), None)
                return row if row is not None and row["state"] == "UNAVAILABLE" else None

            row = _wait_for(unavailable, 10, "version 2 UNAVAILABLE in the index")
            reason = row["reason"]
            assert reason, row
            assert "model.skops" in reason, reason  # says which file...
            for path in {str(repo), str(repo.resolve()), str(tmp_path), str(tmp_path.resolve())}:
                assert path not in reason, reason  # ...without showing where the server keeps it
            assert "/tmp/" not in reason and not reason.startswith("/"), reason

            summary = http.get("/models/m").json()
            assert summary["default_version"] == "1", summary
            states = {v["version"]: v for v in summary["versions"]}
            assert states["1"]["state"] == "READY", summary
            assert states["2"]["state"] == "UNAVAILABLE" and states["2"]["reason"] == reason, summary
            index = {(r["name"], r["version"]): r["state"] for r in http.post("/v2/repository/index").json()}
            assert index == {("m", "1"): "READY", ("m", "2"): "UNAVAILABLE"}, index

            # traffic stays on version 1, whichever front end asks
            for _ in range(20):
                r = http.post("/models/m/predict", json={"x": 0.0})
                assert r.status_code == 200 and r.headers["model-version"] == "1" and r.json()["prediction"] == 1
            v1 = http.post("/v1/models/m:predict", json={"instances": [{"x": 0.0}]})
            assert v1.status_code == 200 and v1.headers["model-version"] == "1", v1.text
            v2 = http.post(
                "/v2/models/m/infer",
                json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.0]}]},
            )
            assert v2.status_code == 200 and v2.json()["model_version"] == "1", v2.text
            # asking for the broken version by number: 503 with the same reason, not a crash
            broken = http.post("/models/m/versions/2/predict", json={"x": 0.0})
            assert broken.status_code == 503, broken.text
            assert str(repo) not in broken.text and str(repo.resolve()) not in broken.text, broken.text

            # fixing it (a new, good version 3) moves traffic on; the broken one goes from the index
            publish_version(repo, "m", 3)

            def on_three() -> Any:
                r = http.post("/models/m/predict", json={"x": 0.0})
                return r.headers.get("model-version") == "3" and r.json()["prediction"] == 3

            _wait_for(on_three, 10, "traffic on version 3")
        assert server.process.poll() is None
