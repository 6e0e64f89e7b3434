"""One real server for the client's end-to-end tests: the bundled iris model and the echo toy model, with API
keys required. Started once per session (start-up dominates these tests' time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import modelapi.demo
from e2e.server import serve
from helpers.clientserver import Served
from helpers.keys import cli_create_key

IRIS = Path(modelapi.demo.__file__).parent / "iris.skops"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state = tmp_path_factory.mktemp("client-state")
    key = cli_create_key(state)
    args = (str(IRIS), "toymodels:Echo", "--state-dir", str(state), "--auth", "on")
    with serve(*args, tmp_dir=state, timeout=180, env={"MODELAPI_API_KEY": ""}) as server:
        yield Served(server, key)
