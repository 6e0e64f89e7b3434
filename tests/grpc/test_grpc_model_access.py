"""A key's model list on every RPC that names a model, as ``tests/security/test_model_access.py`` walks every
HTTP route: a model outside the key's list is ``NOT_FOUND`` as an unknown model is (naming none of the models
the key may not use), before any model code runs or the repository is touched. The walk takes the RPCs from
the service's descriptor, so a new RPC with a model name field is checked without anyone listing it here.
The repository RPCs refuse the parameters that would make the server read content or a path, as HTTP does."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.errors import MalformedRequest, ModelNotFound
from modelapi.grpc import proto
from modelapi.grpc.servicer import Frontend, Servicer
from modelapi.http.app import create_app
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier


class CountingEcho(Echo):
    calls = 0

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        CountingEcho.calls += 1
        return super().predict(inputs)


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None


def _naming(request: Any, name: str) -> Any | None:
    """``request`` with its model name field set, or ``None`` when the message names no model."""
    for field in ("name", "model_name"):
        if field in request.DESCRIPTOR.fields_by_name:
            setattr(request, field, name)
            return request
    return None


def test_every_rpc_that_names_a_model_refuses_a_model_outside_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path, auth="on", management_routes=True, job_workers=0)
    app = create_app([IrisClassifier(), CountingEcho()], settings)
    key = create_key(tmp_path, scope="admin", models=["iris"])
    with TestClient(app):
        services: Any = app.state.services
        servicer = Servicer(Frontend(services=lambda: services, ready=lambda: True))
        touched: list[str] = []

        async def refuse(name: str) -> None:
            touched.append(name)

        monkeypatch.setattr(services.repository, "load_model", refuse)
        monkeypatch.setattr(services.repository, "unload_model", refuse)
        CountingEcho.calls = 0
        walked = []

        async def walk() -> None:
            for method, (request_type, _) in proto.METHODS.items():
                for name in ("echo", "nosuch"):
                    request = _naming(request_type(), name)
                    if request is None:
                        continue
                    walked.append(method)
                    context = FakeContext((("authorization", f"Bearer {key}"),))
                    with pytest.raises(ModelNotFound) as caught:
                        await getattr(servicer, method)(request, context)
                    detail = caught.value.detail
                    assert detail.startswith(f"no model named '{name}'"), (method, detail)
                    assert "echo" not in detail.removeprefix(f"no model named '{name}'"), (method, detail)

        asyncio.run(walk())
    expected = {
        "ModelReady",
        "ModelMetadata",
        "ModelInfer",
        "ModelStatistics",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    assert set(walked) == expected
    assert CountingEcho.calls == 0 and touched == []


def test_the_repository_rpcs_refuse_content_and_paths_as_http_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path, auth="on", management_routes=True, job_workers=0)
    app = create_app([IrisClassifier()], settings)
    key = create_key(tmp_path, scope="admin")
    with TestClient(app) as http:
        services: Any = app.state.services
        servicer = Servicer(Frontend(services=lambda: services, ready=lambda: True))
        touched: list[str] = []

        async def refuse(name: str) -> None:
            touched.append(name)

        monkeypatch.setattr(services.repository, "load_model", refuse)
        monkeypatch.setattr(services.repository, "unload_model", refuse)
        context = FakeContext((("authorization", f"Bearer {key}"),))

        async def calls() -> list[str]:
            details = []
            for parameter in ("file:1/model.onnx", "config", "bogus"):
                load = proto.RepositoryModelLoadRequest(model_name="iris")
                load.parameters[parameter].string_param = "x"
                with pytest.raises(MalformedRequest) as caught:
                    await servicer.RepositoryModelLoad(load, context)
                details.append(caught.value.detail)
            unload = proto.RepositoryModelUnloadRequest(model_name="iris")
            unload.parameters["unload_dependents"].string_param = "yes"
            with pytest.raises(MalformedRequest, match="unload_dependents: must be a boolean"):
                await servicer.RepositoryModelUnload(unload, context)
            return details

        details = asyncio.run(calls())
        headers = {"Authorization": f"Bearer {key}"}
        for parameter, detail in zip(("file:1/model.onnx", "config", "bogus"), details, strict=True):
            body = {"parameters": {parameter: "x"}}
            r = http.post("/v2/repository/models/iris/load", json=body, headers=headers)
            assert r.status_code == 400 and r.json()["error"] == detail  # the same words over both front ends
    assert details[0].startswith("parameters.file:1/model.onnx: not supported; models load from the repository")
    assert details[2] == "parameters.bogus: not supported; supported: none"
    assert touched == []
