"""The authentication middleware in process: headers, 401/403/404, model limits, listings, the on/off rule."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.http.app import create_app
from modelapi.security.auth import Auth
from modelapi.security.keys import KeyStore
from modelapi.settings import Settings
from toymodels import Echo, IrisClassifier, Regressor

IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
CHALLENGE = 'Bearer realm="modelapi"'


#: what a test run may add to a bound (a loaded machine, the test client's own time)
SLACK_S = 0.4


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused(client: TestClient, key: str, give_up_s: float = 5.0) -> tuple[Any, float]:
    """Ask with ``key`` until the answer is 401: that answer and the seconds it took."""
    start = time.monotonic()
    while True:
        r = client.get("/models", headers=bearer(key))
        waited = time.monotonic() - start
        if r.status_code == 401 or waited > give_up_s:
            return r, waited
        time.sleep(0.02)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def app_client(state: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(models: list[Any] | None = None, **settings: Any) -> TestClient:
        options = {"state_dir": state, "auth": "on", **settings}
        app = create_app(models or [IrisClassifier(), Echo(), Regressor()], Settings(**options))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_no_key_is_401_with_a_challenge_in_each_error_style(state: Path, app_client: Any) -> None:
    client = app_client()
    r = client.post("/models/iris/predict", json=IRIS_ROW)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == CHALLENGE
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "Authorization: Bearer" in r.json()["detail"] and r.json()["request_id"] == r.headers["x-request-id"]
    r = client.get("/v2/models/iris")
    assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE
    assert set(r.json()) == {"error", "request_id"}
    for path in ("/", "/models", "/models/iris", "/v2", "/jobs/abc", "/models/iris/predict"):
        assert client.get(path).status_code == 401, path


def test_pages_and_their_assets_load_without_a_key_and_hold_no_data(state: Path, app_client: Any) -> None:
    key = create_key(state)
    client = app_client()
    for path in (
        "/docs",
        "/docs/assets/init.js",
        "/docs/assets/swagger-ui.css",
        "/models/iris/playground",
        "/playground/assets/playground.js",
        "/playground/assets/playground.css",
    ):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "setosa" not in r.text and "sepal_length" not in r.text, path
    assert "<title>modelapi</title>" in client.get("/docs").text  # no model named to a caller without a key
    # the API description without a key: the routes and how to send a key, no model
    for path in ("/openapi.json", "/docs/openapi-3.0.json"):
        doc = client.get(path).json()
        assert not [p for p in doc["paths"] if "iris" in p] and "iris" not in str(doc), path
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        with_key = client.get(path, headers=bearer(key)).json()
        assert "/models/iris/predict" in with_key["paths"]
    # a key sent to a public path is still checked
    r = client.get("/docs", headers=bearer("mk_00000000_" + "0" * 32))
    assert r.status_code == 401
    assert client.get("/docs?api_key=x").status_code == 401  # and never taken from the query string
    # an asset that is not one of the page's files is a 404, key or not
    assert client.get("/playground/assets/routes.py").status_code == 404
    assert client.get("/playground/assets/../routes.py").status_code in (401, 404)


def test_health_probes_stay_open(app_client: Any) -> None:
    client = app_client()
    for path in ("/v2/health/live", "/v2/health/ready", "/ping", "/health"):
        assert client.get(path).status_code == 200, path


def test_a_key_in_either_header_works(state: Path, app_client: Any) -> None:
    key = create_key(state)
    client = app_client()
    for headers in (
        bearer(key),
        {"X-API-Key": key},
        {"authorization": f"bearer {key}"},
        {"authorization": f"Bearer   {key}"},
        {**bearer(key), "X-API-Key": key},
    ):
        r = client.post("/models/iris/predict", json=IRIS_ROW, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    assert client.get("/v2/models/iris", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must read 'Bearer <key>'"),
        ({"Authorization": "Bearer "}, "must read 'Bearer <key>'"),
        ({"X-API-Key": "hello"}, "malformed"),
        ({"X-API-Key": "mk_00000000_" + "0" * 64}, "not valid"),
    ],
)
def test_bad_keys_are_401(state: Path, app_client: Any, headers: dict[str, str], words: str) -> None:
    create_key(state)
    r = app_client().get("/models", headers=headers)
    assert r.status_code == 401 and words in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith(CHALLENGE)


def test_two_different_keys_are_refused(state: Path, app_client: Any) -> None:
    a, b = create_key(state), create_key(state)
    r = app_client().get("/models", headers={**bearer(a), "X-API-Key": b})
    assert r.status_code == 401 and "different keys" in r.json()["detail"]


@pytest.mark.parametrize("query", ["api_key={key}", "x=1&apikey={key}", "access_token={key}", "sepal_length={key}"])
def test_a_key_in_the_query_string_is_refused_explaining_why(state: Path, app_client: Any, query: str) -> None:
    key = create_key(state)
    r = app_client().get(f"/models/iris/predict?{query.format(key=key)}", headers=bearer(key))
    assert r.status_code == 401
    assert "not accepted in the query string" in r.json()["detail"]
    assert key not in r.text


def test_expired_and_revoked_keys_are_401(state: Path, app_client: Any) -> None:
    expired = create_key(state, expires_at=time.time() - 1)
    live = create_key(state)
    client = app_client()
    r = client.get("/models", headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert r.headers["www-authenticate"] == f'{CHALLENGE}, error="invalid_token"'
    assert client.get("/models", headers=bearer(live)).status_code == 200
    store = KeyStore.open(state, None)
    store.revoke(live)  # as `modelapi keys revoke` does: another process writing the store
    store.close()
    r, waited = refused(client, live)  # no restart: within the worker's key cache time
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert waited < Settings().key_cache_s + SLACK_S


def test_a_revocation_reaches_every_worker(state: Path, app_client: Any) -> None:
    key = create_key(state)
    workers = [app_client(), app_client()]  # two apps, as two worker processes each build their own
    assert all(w.get("/models", headers=bearer(key)).status_code == 200 for w in workers)
    store = KeyStore.open(state, None)
    store.revoke(key)
    store.close()
    for worker in workers:
        r, waited = refused(worker, key)
        assert r.status_code == 401 and waited < 1.0  # issue 13: refused everywhere within 1 s


def test_without_a_key_cache_the_very_next_request_is_refused(state: Path, app_client: Any) -> None:
    key = create_key(state)
    client = app_client(key_cache_s=0)
    assert client.get("/models", headers=bearer(key)).status_code == 200
    store = KeyStore.open(state, None)
    store.revoke(key)
    store.close()
    assert client.get("/models", headers=bearer(key)).status_code == 401


def test_the_server_caches_keys_for_key_cache_s(state: Path) -> None:
    assert Settings().key_cache_s == 0.5  # docs/security.md#key-cache: within issue 13's 1 s
    create_key(state)
    auth = Auth.from_settings(Settings(state_dir=state, auth="on", key_cache_s=0.25))
    try:
        assert auth.store is not None and auth.store.cache.ttl_s == 0.25
    finally:
        auth.close()


def _body(r: Any) -> Any:
    body = r.json()
    body.pop("request_id", None)
    return (r.status_code, r.headers["content-type"], body)


def test_a_model_outside_the_key_answers_as_a_model_that_does_not_exist(state: Path, app_client: Any) -> None:
    key = create_key(state, models=["iris"])
    client = app_client()
    h = bearer(key)
    assert client.post("/models/iris/predict", json=IRIS_ROW, headers=h).status_code == 200
    for method, template in [
        ("GET", "/models/{}"),
        ("POST", "/models/{}/predict"),
        ("GET", "/v2/models/{}"),
        ("GET", "/v2/models/{}/ready"),
        ("POST", "/v2/models/{}/infer"),
        ("GET", "/v2/models/{}/versions/1"),
        ("GET", "/v1/models/{}"),
        ("POST", "/v1/models/{}:predict"),
        ("POST", "/models/{}/invocations"),
        ("POST", "/models/{}/jobs"),
    ]:
        hidden = client.request(method, template.format("echo"), headers=h, json={})
        absent = client.request(method, template.format("nosuch"), headers=h, json={})
        assert hidden.status_code == 404, (template, hidden.text)
        assert _norm(hidden, "echo") == _norm(absent, "nosuch"), template  # same status, type, body
        assert "regressor" not in hidden.text and "iris" not in hidden.text


def _norm(r: Any, name: str) -> Any:
    status, ctype, body = _body(r)
    return status, ctype, {k: str(v).replace(name, "NAME") for k, v in body.items()}


def test_listings_show_only_the_keys_models(state: Path, app_client: Any) -> None:
    key = create_key(state, models=["iris", "regressor"])
    client = app_client()
    h = bearer(key)
    assert [m["name"] for m in client.get("/models", headers=h).json()["models"]] == ["iris", "regressor"]
    assert client.get("/", headers=h).json()["models"] == ["iris", "regressor"]
    doc = client.get("/openapi.json", headers=h).json()
    assert "echo" not in str(doc["paths"]) and "/models/iris/predict" in doc["paths"]
    assert "echo" not in doc["info"]["description"] and "echo" not in str(doc["tags"])
    doc30 = client.get("/docs/openapi-3.0.json", headers=h).json()
    assert doc30["openapi"] == "3.0.3" and "echo" not in str(doc30["paths"])
    assert "echo" not in client.get("/docs", headers=h).text
    full = create_key(state)
    assert "/models/echo/predict" in client.get("/openapi.json", headers=bearer(full)).json()["paths"]


def test_predict_without_a_name_serves_the_only_model_only_if_the_key_may_use_it(state: Path, app_client: Any) -> None:
    client = app_client([IrisClassifier()])
    allowed, other = create_key(state, models=["iris"]), create_key(state, models=["digits"])
    assert client.post("/predict", json=IRIS_ROW, headers=bearer(allowed)).status_code == 200
    r = client.post("/predict", json=IRIS_ROW, headers=bearer(other))
    assert r.status_code == 404 and "iris" not in r.text
    assert client.get("/", headers=bearer(other)).json()["models"] == []
    several = app_client()
    r = several.post("/predict", json=IRIS_ROW, headers=bearer(allowed))
    assert r.status_code == 404 and "echo" not in r.text and "regressor" not in r.text


def test_management_routes_are_off_unless_enabled_and_need_the_admin_scope(state: Path, app_client: Any) -> None:
    predict, admin = create_key(state), create_key(state, scope="admin")
    assert app_client().post("/v2/repository/index", headers=bearer(admin)).status_code == 404
    client = app_client(management_routes=True)
    assert client.post("/v2/repository/index").status_code == 401
    r = client.post("/v2/repository/index", headers=bearer(predict))
    assert r.status_code == 403 and "admin scope" in r.json()["error"]
    r = client.post("/v2/repository/index", headers=bearer(admin))
    assert r.status_code == 200 and [m["name"] for m in r.json()] == ["iris", "echo", "regressor"]
    limited = create_key(state, scope="admin", models=["echo"])
    assert [m["name"] for m in client.post("/v2/repository/index", headers=bearer(limited)).json()] == ["echo"]


# the rule that turns authentication on ---------------------------------------------------------------------
def test_loopback_without_keys_is_open_and_creates_no_store(state: Path) -> None:
    auth = Auth.from_settings(Settings(state_dir=state))
    assert not auth.enabled and not state.exists()
    client = TestClient(create_app([IrisClassifier()], Settings(state_dir=state)))
    with client:
        assert client.post("/predict", json=IRIS_ROW).status_code == 200


def test_loopback_with_keys_turns_on_even_when_all_are_revoked(state: Path) -> None:
    key = create_key(state)
    assert Auth.from_settings(Settings(state_dir=state)).enabled
    assert Auth.from_settings(Settings(state_dir=state, host="localhost")).enabled
    store = KeyStore.open(state, None)
    store.revoke(key)
    store.close()
    assert Auth.from_settings(Settings(state_dir=state)).enabled
    assert not Auth.from_settings(Settings(state_dir=state, auth="off")).enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_a_non_loopback_address_turns_authentication_on(state: Path, host: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, "modelapi.auth"):
        auth = Auth.from_settings(Settings(state_dir=state, host=host))
    assert auth.enabled and "no key exists" in caplog.text
    with pytest.raises(ValidationError, match="--insecure-no-auth"):
        Settings(state_dir=state, host=host, auth="off")
    caplog.clear()
    with caplog.at_level(logging.WARNING, "modelapi.auth"):
        assert not Auth.from_settings(Settings(state_dir=state, host=host, insecure_no_auth=True)).enabled
    assert "authentication is OFF" in caplog.text


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELAPI_AUTH", "on")
    monkeypatch.setenv("MODELAPI_MANAGEMENT_ROUTES", "true")
    settings = Settings()
    assert (settings.auth, settings.management_routes, settings.insecure_no_auth) == ("on", True, False)
    monkeypatch.setenv("MODELAPI_AUTH", "maybe")
    with pytest.raises(ValidationError, match="auth"):
        Settings()
