"""The API key on a gRPC call: ``authorization: Bearer`` or ``x-api-key`` metadata, as HTTP's headers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers.keys import create_key
from modelapi.errors import Forbidden, TooManyRequests, Unauthorized
from modelapi.events import Events, Observer, RequestRejected
from modelapi.grpc.auth import Authenticator, presented_key
from modelapi.security.auth import Auth
from modelapi.security.keys import KeyStore
from modelapi.security.limits import KeyLimits


def test_the_key_comes_from_either_metadata_entry() -> None:
    assert presented_key([("authorization", "Bearer mk_1")]) == "mk_1"
    assert presented_key([("x-api-key", " mk_2 ")]) == "mk_2"
    assert presented_key([("authorization", "bearer mk_3"), ("x-api-key", "mk_3")]) == "mk_3"
    assert presented_key([("user-agent", "grpc-python"), ("token-bin", b"\x00")]) is None
    with pytest.raises(Unauthorized, match="must read 'Bearer <key>'"):
        presented_key([("authorization", "Basic abc")])
    with pytest.raises(Unauthorized, match="different keys"):
        presented_key([("authorization", "Bearer a"), ("x-api-key", "b")])


class Rejections(Observer):
    def __init__(self) -> None:
        self.seen: list[RequestRejected] = []

    def request_rejected(self, event: RequestRejected) -> None:
        self.seen.append(event)


def test_keys_scopes_and_rate_are_checked_and_refusals_observed(tmp_path: Path) -> None:
    key = create_key(tmp_path, "app")
    admin = create_key(tmp_path, "ops", scope="admin")
    events = Events()
    rejections = Rejections()
    events.subscribe(rejections)
    store = KeyStore.open(tmp_path, None)
    authenticator = Authenticator(Auth(store, "test"), KeyLimits(1, 1, None, events), events)

    async def calls() -> None:
        principal = await authenticator.principal([("authorization", f"Bearer {key}")], "ModelInfer")
        assert principal is not None and principal.name == "app"
        with pytest.raises(Unauthorized, match="needs an API key"):
            await authenticator.principal([], "ModelInfer")
        with pytest.raises(Forbidden, match="RepositoryIndex needs a key with the admin scope"):
            await authenticator.principal([("x-api-key", key)], "RepositoryIndex", admin=True)
        with pytest.raises(TooManyRequests) as caught:
            await authenticator.principal([("x-api-key", key)], "ModelInfer")
        assert caught.value.headers["retry-after"] == "1"
        assert await authenticator.principal([("x-api-key", admin)], "RepositoryIndex", admin=True) is not None

    try:
        asyncio.run(calls())
    finally:
        store.close()
    assert [(r.protocol, r.reason, r.status) for r in rejections.seen] == [
        ("grpc", "unauthenticated", 401),
        ("grpc", "forbidden", 403),
        ("grpc", "rate_limited", 429),
    ]


def test_management_is_refused_when_authentication_is_off() -> None:
    authenticator = Authenticator(Auth(None, "off"), None, Events())

    async def call() -> None:
        assert await authenticator.principal([], "ModelInfer") is None
        with pytest.raises(Forbidden, match="authentication is off"):
            await authenticator.principal([], "RepositoryModelLoad", admin=True)

    asyncio.run(call())


def test_a_key_has_one_rate_over_http_and_grpc(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from modelapi.grpc.servicer import Frontend, Servicer
    from modelapi.http.app import create_app
    from modelapi.settings import Settings
    from toymodels import IrisClassifier

    key = create_key(tmp_path, "app")
    settings = Settings(state_dir=tmp_path, auth="on", rate_limit=0.01, rate_burst=1)
    app = create_app([IrisClassifier()], settings)
    with TestClient(app) as http:
        assert http.get("/v2/models/iris", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        services = app.state.services
        authenticator = Servicer(Frontend(services=lambda: services, ready=lambda: True))._authenticator(services)
        with pytest.raises(TooManyRequests):  # the HTTP request took the key's only token
            asyncio.run(authenticator.principal([("x-api-key", key)], "ModelInfer"))
