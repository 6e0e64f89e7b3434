"""/docs rendered by a real browser (headless Chromium) against the real server: no network beyond loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .server import serve


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def test_docs_render_the_models_operations(tmp_path: Path) -> None:
    browser = chromium()
    with serve("toymodels:IrisClassifier", "--name", "iris", tmp_dir=tmp_path) as server:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=15000",
                "--enable-logging=stderr",
                "--log-level=0",
                "--dump-dom",
                f"{server.url}/docs#/iris/post_models_iris_predict",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unable to render" not in dom
    assert 'data-path="/models/iris/predict"' in dom, dom[-2000:]
    assert 'data-path="/v1/models/iris:predict"' in dom
    assert "sepal_length" in dom  # the expanded operation shows the model's example record
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Content Security Policy" in line or "Refused" in line], console
