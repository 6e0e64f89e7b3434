"""Helpers for the job tests: a stand-in for authentication and polling a job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from modelapi.security.principal import SCOPE_KEY, Principal

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


def wait_for(client: TestClient, location: str, states: set[str], timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(location).json()
        if body["status"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {body['status']}, wanted {states}: {body}")
        time.sleep(0.02)
