"""Mistakes in a watched repository that the scan (not the loader) catches, over HTTP.

Regression tests: a version directory with two model files used to vanish silently, and a model.toml typo
under ``--watch`` used to take the serving version down.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.model_repo import make_repository, model_bytes, write_config

from .server import RunningServer, serve


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("bad-files")
    repo = make_repository(tmp / "repo", {"two": [1], "typo": [1]})
    with serve(str(repo), "--watch", tmp_dir=tmp) as server:
        yield server, repo


def _summary(server: RunningServer, name: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/models/{name}").json())


def test_a_version_with_two_model_files_is_shown_unavailable(watched: tuple[RunningServer, Path]) -> None:
    server, repo = watched
    staging = repo / "two" / "2.tmp"
    staging.mkdir()
    (staging / "a.skops").write_bytes(model_bytes(2))
    (staging / "b.skops").write_bytes(model_bytes(2))
    os.rename(staging, repo / "two" / "2")
    deadline = time.monotonic() + 2.5  # the watcher's debounce is 0.5 s; a scan takes milliseconds
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = {v["version"]: v for v in _summary(server, "two")["versions"]}
        if "2" in states:
            break
        time.sleep(0.1)
    assert httpx.post(f"{server.url}/models/two/predict", json={"x": 0.0}).headers["model-version"] == "1"
    assert states.get("2", {}).get("state") == "UNAVAILABLE", states
    assert "several model files" in states["2"]["reason"], states


def test_a_typo_in_model_toml_keeps_the_serving_version(watched: tuple[RunningServer, Path]) -> None:
    server, repo = watched
    write_config(repo, "typo", "canary_precent = 5\n")  # the misspelling config.py's docstring warns of
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "error" not in _summary(server, "typo"):
        time.sleep(0.1)
    summary = _summary(server, "typo")
    assert "canary_precent" in summary.get("error", ""), summary  # the mistake is reported...
    r = httpx.post(f"{server.url}/models/typo/predict", json={"x": 0.0})
    assert r.status_code == 200 and r.headers["model-version"] == "1", r.text  # ...and version 1 still serves
