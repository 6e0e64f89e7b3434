"""What the session's server fixture (tests/client/conftest.py ``served``) hands to the client tests."""

from __future__ import annotations

from dataclasses import dataclass

from e2e.server import RunningServer


@dataclass
class Served:
    server: RunningServer
    key: str  # an API key with the predict scope

    @property
    def url(self) -> str:
        return self.server.url
