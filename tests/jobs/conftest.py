from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from jobmodels import Scorer

from modelapi.http.app import create_app
from modelapi.security.principal import SCOPE_KEY, Principal
from modelapi.settings import Settings

AppFactory = Callable[..., TestClient]


class WithKey:
    """Stands in for authentication: ``X-Test-Key: NAME`` makes the request come from API key NAME
    (an ``admin...`` name gets the admin scope)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"x-test-key":
                    name = value.decode()
                    scopes = frozenset({"admin"} if name.startswith("admin") else {"predict"})
                    scope[SCOPE_KEY] = Principal(key_id=f"id-{name}", name=name, scopes=scopes)
        await self.app(scope, receive, send)


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


def wait_for(client: TestClient, location: str, states: set[str], timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(location).json()
        if body["status"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {body['status']}, wanted {states}: {body}")
        time.sleep(0.02)
