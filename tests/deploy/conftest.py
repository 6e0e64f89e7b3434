from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelapi.cli import main

IMAGE = "registry.example.com/modelapi:0.1.0"
DIGEST_IMAGE = "registry.example.com/modelapi@sha256:" + "ab" * 32


def generate(tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    """Run ``modelapi deploy ARGS --output DIR``; the manifests it wrote, by kind."""
    out = tmp_path / "manifests"
    assert main(["deploy", *args, "--output", str(out)]) == 0
    found = {}
    for path in sorted(out.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        found[doc["kind"]] = doc
    return found


@pytest.fixture
def kubernetes(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return generate(tmp_path, "kubernetes", "/models/iris.skops", "--image", IMAGE, "--replicas", "3")


@pytest.fixture
def kserve(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return generate(tmp_path, "kserve", "--name", "iris", "--storage-uri", "gs://bucket/iris", "--image", IMAGE)
