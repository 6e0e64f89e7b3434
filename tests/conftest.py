from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

# The one place tests/ goes on sys.path, so that every test imports ``helpers.*`` and ``toymodels`` (and a model
# spec such as ``helpers.jobmodels:Scorer`` loads in process) whatever pytest's import mode: ``prepend`` would
# add tests/ for this conftest, ``importlib`` would not. Servers and workers that tests start are other processes:
# they import ``toymodels:...`` by module path through the PYTHONPATH (tests/ first) that e2e/server.py,
# helpers/server_process.py and e2e/jobs_helpers.py give them.
sys.path.insert(0, str(Path(__file__).parent))
# and the checkout's root, appended (it shadows nothing installed), for tests/test_bench.py: the bench is no
# package of modelapi's, and `python -m bench.run` imports it from the checkout too
sys.path.append(str(Path(__file__).parents[1]))

from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier, Regressor


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own state directory (key store, jobs) and no MODELAPI_* settings from the developer's
    shell, so a key created with `modelapi keys create` or a stored job never leaks into a test. Servers that
    tests start inherit this environment."""
    import os

    for name in list(os.environ):
        if name.startswith("MODELAPI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELAPI_STATE_DIR", str(tmp_path_factory.mktemp("state")))


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
