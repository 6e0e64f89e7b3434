"""Labels and the canary share over HTTP, from a repository's ``model.toml``."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from helpers.model_repo import make_repository, publish_version, write_config
from helpers.repo import skops_bytes

from .server import serve

CONFIG = """\
version_policy = "all"
canary_percent = 10
[labels]
stable = 1
canary = 2
"""
REQUESTS = 1000


def test_labels_and_a_ten_percent_canary(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", {"m": [1, 2, 3]}, {"m": CONFIG})
    with serve(str(repo), tmp_dir=tmp_path) as server:

        def versions(n: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                for _ in range(n):
                    r = http.post("/models/m/predict", json={"x": 0.0})
                    assert r.status_code == 200, r.text
                    assert r.json()["prediction"] == int(r.headers["model-version"])
                    seen[r.headers["model-version"]] += 1
            return seen

        with ThreadPoolExecutor(4) as pool:
            counts = sum(pool.map(versions, [REQUESTS // 4] * 4), Counter())
        assert sum(counts.values()) == REQUESTS
        assert set(counts) <= {"1", "2"}, counts  # version 3 is served only when asked for
        assert 70 <= counts["2"] <= 130, f"canary share {counts['2'] / REQUESTS:.1%}: {counts}"

        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            summary = http.get("/models/m").json()
            assert summary["default_version"] == "1"
            assert summary["labels"] == {"stable": "1", "canary": "2"}
            assert summary["canary_percent"] == 10
            for label, version in (("stable", "1"), ("canary", "2")):
                for _ in range(20):  # a label's version every time, never the canary share
                    r = http.post(f"/models/m/labels/{label}/predict", json={"x": 0.0})
                    assert r.status_code == 200 and r.headers["model-version"] == version, r.text
                    assert r.json()["prediction"] == int(version)
                r = http.post(f"/v1/models/m/labels/{label}:predict", json={"instances": [{"x": 0.0}]})
                assert r.status_code == 200 and r.headers["model-version"] == version, r.text
            for version in ("1", "2", "3"):
                r = http.post(f"/models/m/versions/{version}/predict", json={"x": 0.0})
                assert r.status_code == 200 and r.headers["model-version"] == version, r.text
                r = http.post(f"/v1/models/m/versions/{version}:predict", json={"instances": [{"x": 0.0}]})
                assert r.status_code == 200 and r.headers["model-version"] == version, r.text
                r = http.post(
                    f"/v2/models/m/versions/{version}/infer",
                    json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.0]}]},
                )
                assert r.status_code == 200 and r.json()["model_version"] == version, r.text
            missing = http.post("/models/m/labels/beta/predict", json={"x": 0.0})
            assert missing.status_code == 404 and "stable" in missing.text, missing.text


def test_a_canary_that_refuses_the_stable_inputs_names_itself_in_its_errors(tmp_path: Path) -> None:
    """Version 2, the canary, takes other inputs than version 1: the unversioned calls it takes are refused (400),
    and each refusal names version 2 in ``Model-Version``, as each success names version 1."""
    root = tmp_path / "repo"
    publish_version(root, "m", 1)  # one feature x
    publish_version(root, "m", 2, data=skops_bytes("v2"))  # a three-feature "input"
    write_config(root, "m", CONFIG.replace("canary_percent = 10", "canary_percent = 50"))
    with serve(str(root), tmp_dir=tmp_path) as server, httpx.Client(base_url=server.url, timeout=10.0) as http:
        seen: dict[int, set[str]] = {}
        for _ in range(100):
            r = http.post("/models/m/predict", json={"x": 0.0})
            seen.setdefault(r.status_code, set()).add(r.headers.get("model-version", "-"))
        assert seen == {200: {"1"}, 400: {"2"}}, seen
        r = http.post("/v1/models/m/labels/canary:predict", json={"instances": [{"x": 0.0}]})
        assert r.status_code == 400 and r.headers["model-version"] == "2", r.text
        r = http.post("/models/m/labels/beta/predict", json={"x": 0.0})
        assert r.status_code == 404 and "model-version" not in r.headers, r.headers
