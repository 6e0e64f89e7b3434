from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier, Regressor


@pytest.fixture
def client() -> Iterator[TestClient]:
    """In-process client for an app serving the iris, echo and regressor toy models."""
    app = create_app([IrisClassifier(), Echo(), Regressor()], Settings(max_body_bytes=1_000_000, max_rows=1000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def single_client() -> Iterator[TestClient]:
    """In-process client for an app serving only the iris toy model (so /predict exists)."""
    app = create_app([IrisClassifier()], Settings())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
