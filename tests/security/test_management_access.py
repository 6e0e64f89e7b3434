"""Management with a key limited to some models, and the hint a refused management call gives."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from helpers.keys import create_key
from helpers.repo import ModelRepo, skops_bytes
from modelapi.cli import build_parser
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import IrisClassifier


def test_a_limited_key_loads_a_model_that_is_on_disk_but_not_yet_known(tmp_path: Path) -> None:
    repo = ModelRepo(tmp_path / "models")
    repo.version("m", 1, skops_bytes("m"))
    settings = Settings(models=[str(repo.root)], state_dir=tmp_path, auth="on", management_routes=True, job_workers=0)
    key = create_key(tmp_path, scope="admin", models=["later", "ghost"])
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(None, settings), raise_server_exceptions=False) as client:
        repo.version("later", 1, skops_bytes("later"))  # after the start: the repository does not know it yet
        assert client.post("/models/later/predict", json={"input": [1.0, 0.0, 0.0]}, headers=headers).status_code == 404
        r = client.post("/v2/repository/models/later/load", headers=headers)
        assert r.status_code == 200, r.text
        r = client.post("/models/later/predict", json={"input": [1.0, 0.0, 0.0]}, headers=headers)
        assert r.status_code == 200 and r.json()["prediction"] == "later-hi", r.text

        # a model the key may not use, and one that exists nowhere, answer the same 404, naming no other model
        def refusal(name: str) -> Any:
            r = client.post(f"/v2/repository/models/{name}/load", headers=headers)
            assert r.status_code == 404, r.text
            return {k: v for k, v in r.json().items() if k != "request_id"}

        assert refusal("m") == {"error": "no model named 'm'"}
        assert refusal("nosuch") == {"error": "no model named 'nosuch'"}
        assert "later" not in str(refusal("ghost")) and "'m'" not in str(refusal("ghost"))  # listed, not on disk


def test_the_admin_key_hint_is_a_command_the_cli_takes(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, management_routes=True, job_workers=0)  # authentication off
    with TestClient(create_app([IrisClassifier()], settings)) as client:
        r = client.post("/v2/repository/index")
    assert r.status_code == 403
    hinted = re.search(r"'(modelapi keys create [^']*)'", r.json()["error"])
    assert hinted is not None, r.text
    argv = shlex.split(hinted.group(1).replace("NAME", "ops"))
    args = build_parser().parse_args(argv[1:])
    assert (args.name, args.scope) == ("ops", "admin")
