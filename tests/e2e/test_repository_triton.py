"""NVIDIA's own ``tritonclient``, unchanged, against the repository extension of the real server
(``--enable-management``): index, unload, load, readiness, with an admin key passed as a header."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers.keys import create_key
from helpers.model_repo import make_repository, model_bytes
from helpers.triton_http import triton_http

from .server import serve


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (directories: "dir")."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _infer_version(client: httpclient.InferenceServerClient, auth: dict[str, str]) -> tuple[str, int]:
    item = httpclient.InferInput("x", [1], "FP64")
    item.set_data_from_numpy(np.array([0.0]))
    result = client.infer("m", [item], headers=auth)
    label = result.as_numpy("label")
    assert label is not None
    return str(result.get_response()["model_version"]), int(label[0])


def test_tritonclient_repository_calls(tmp_path: Path) -> None:
    state_dir = Path(os.environ["MODELAPI_STATE_DIR"])
    auth = {"Authorization": f"Bearer {create_key(state_dir, 'ops', scope='admin')}"}
    predict_only = {"Authorization": f"Bearer {create_key(state_dir, 'app', scope='predict')}"}
    repo = make_repository(tmp_path / "repo", {"m": [1, 2], "other": [1]}, {"m": 'version_policy = "all"\n'})
    with (
        serve(str(repo), "--enable-management", tmp_dir=tmp_path) as server,
        triton_http(server.url.removeprefix("http://")) as client,
    ):
        index = client.get_model_repository_index(headers=auth)
        assert sorted((r["name"], r["version"], r["state"]) for r in index) == [
            ("m", "1", "READY"),
            ("m", "2", "READY"),
            ("other", "1", "READY"),
        ]
        assert client.is_model_ready("m", headers=auth)
        assert client.is_model_ready("m", "1", headers=auth)
        assert _infer_version(client, auth) == ("2", 2)

        # the management calls need an admin key: none is 401, a predict-only key 403
        with pytest.raises(InferenceServerException) as no_key:
            client.unload_model("m")
        assert no_key.value.status() == "401"
        with pytest.raises(InferenceServerException) as not_admin:
            client.unload_model("m", headers=predict_only)
        assert not_admin.value.status() == "403"
        with pytest.raises(InferenceServerException) as not_admin_index:
            client.get_model_repository_index(headers=predict_only)
        assert not_admin_index.value.status() == "403"
        assert client.is_model_ready("m", headers=auth)

        client.unload_model("m", headers=auth)
        assert not client.is_model_ready("m", headers=auth)
        assert client.is_model_ready("other", headers=auth)
        rows = {r["name"]: r for r in client.get_model_repository_index(headers=auth)}
        assert rows["m"]["state"] == "UNAVAILABLE" and rows["other"]["state"] == "READY", rows
        with pytest.raises(InferenceServerException) as gone:
            _infer_version(client, auth)
        assert gone.value.status() in ("404", "503")

        # files in a load request are refused: models come from the repository only; nothing is written
        tree = _tree(repo)
        state = _tree(state_dir)
        for kwargs in (
            {"files": {"file:1/model.skops": model_bytes(7)}, "config": '{"backend": "python"}'},
            {"files": {"file:3/model.skops": model_bytes(3)}},
            {"config": '{"max_batch_size": 8}'},
        ):
            with pytest.raises(InferenceServerException) as refused:
                client.load_model("m", headers=auth, **kwargs)
            assert refused.value.status() == "400", refused.value
            assert "repository" in str(refused.value.message()), refused.value
            assert not client.is_model_ready("m", headers=auth)
        assert _tree(repo) == tree
        assert _tree(state_dir) == state
        assert not any(
            r["state"] == "READY" for r in client.get_model_repository_index(headers=auth) if r["name"] == "m"
        )

        with pytest.raises(InferenceServerException) as unknown:
            client.load_model("nope", headers=auth)
        assert unknown.value.status() in ("400", "404")

        client.load_model("m", headers=auth)
        assert client.is_model_ready("m", headers=auth)
        assert client.is_model_ready("m", "2", headers=auth)
        assert _infer_version(client, auth) == ("2", 2)
        ready = client.get_model_repository_index(headers=auth)
        assert sorted((r["name"], r["version"], r["state"]) for r in ready) == [
            ("m", "1", "READY"),
            ("m", "2", "READY"),
            ("other", "1", "READY"),
        ]
