from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers.jobmodels import Scorer
from helpers.jobs import AppFactory, WithKey
from modelapi.http.app import create_app
from modelapi.settings import Settings


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Start apps serving the scorer with jobs in ``tmp_path``; all stopped at the end of the test."""
    opened: list[TestClient] = []

    def make(*, keys: bool = False, **overrides: Any) -> TestClient:
        options: dict[str, Any] = {"state_dir": tmp_path / "state", "job_chunk_rows": 4, "job_lease_s": 2.0}
        settings = Settings(**{**options, **overrides})
        app: Any = create_app([Scorer()], settings)
        client = TestClient(WithKey(app) if keys else app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
