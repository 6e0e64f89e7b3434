"""The Makefile's install stamps: `make serve` installs the light [serve] extra, `make test` everything, and each
works after the other in one checkout (the dev install counts as a serve install; the reverse does not)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(where: Path, target: str) -> str:
    done = subprocess.run(["make", "-n", target], cwd=where, capture_output=True, text=True, check=True)
    return done.stdout


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    later = time.time() + 5  # newer than pyproject.toml
    os.utime(path, (later, later))


def test_serve_installs_the_light_extra_and_test_everything(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    serve = dry_run(tmp_path, "serve")
    assert "-e '.[serve]'" in serve and "torch" not in serve and "modelapi serve" in serve
    test = dry_run(tmp_path, "test")
    assert "-e '.[dev]'" in test and "torch==" in test  # the CPU build pinned first

    touch(tmp_path / ".venv" / ".installed")  # after `make serve`: `make test` still installs [dev]
    assert "-e '.[dev]'" in dry_run(tmp_path, "test")

    (tmp_path / ".venv" / ".installed").unlink()  # after `make test` alone: `make serve` installs nothing
    touch(tmp_path / ".venv" / ".installed-dev")
    touch(tmp_path / ".venv" / ".installed")  # the dev recipe touches both stamps
    serve = dry_run(tmp_path, "serve")
    assert "pip install" not in serve and "modelapi serve" in serve
    assert "pip install" not in dry_run(tmp_path, "test")


def test_the_serve_extra_has_onnx_and_no_heavy_format() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("serve = "))
    assert line == 'serve = ["modelapi[onnx]"]'
