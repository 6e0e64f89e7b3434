from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelapi import metrics


@pytest.fixture(autouse=True)
def single_process() -> Iterator[None]:
    """Each test starts with fresh single-process metrics and no samplers, and leaves them so."""
    metrics.setup(None)
    metrics.clear_samplers()
    yield
    metrics.clear_samplers()
    metrics.setup(None)


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    metrics.setup(directory)
    return directory
