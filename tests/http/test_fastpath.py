"""The inference routes' direct dispatch (http/fastpath.py) answers exactly as Starlette's stack does: the same
statuses, bodies and headers for answers, client mistakes, refusals and routes it leaves to the router; with a
key limited to other models, the same 404; and only the inference routes take it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Match
from starlette.testclient import TestClient

from helpers.keys import create_key
from modelapi.events import Observer, RequestRejected
from modelapi.http import fastpath
from modelapi.http.app import create_app
from modelapi.http.routing import ProtocolRoute
from modelapi.security.auth import AuthMiddleware
from modelapi.security.limits import RateLimitMiddleware
from modelapi.settings import Settings
from toymodels import HalfPlusThree, IrisClassifier, Regressor

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
V2 = {"inputs": [{"name": k, "datatype": "FP64", "shape": [1], "data": [v]} for k, v in ROW.items()]}

#: (method, path, keyword arguments for the client): answers, client mistakes and refusals on every protocol
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/models/iris/predict", {"json": ROW}),
    ("POST", "/predict", {"json": [ROW, ROW]}),
    ("POST", "/models/iris/versions/1/predict", {"json": ROW}),
    ("POST", "/models/iris/versions/9/predict", {"json": ROW}),
    ("POST", "/models/iris/labels/nope/predict", {"json": ROW}),
    ("POST", "/models/nope/predict", {"json": ROW}),
    ("POST", "/models/iris/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("POST", "/models/iris/predict", {"content": b"a,b", "headers": {"content-type": "text/csv"}}),
    ("POST", "/models/iris/predict", {"json": {"sepal_length": 1}}),
    ("GET", "/models/iris/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2", {}),
    ("POST", "/v2/models/iris/infer", {"json": V2}),
    ("POST", "/v2/models/iris/versions/1/infer", {"json": V2}),
    ("POST", "/v2/models/nope/infer", {"json": V2}),
    ("POST", "/v2/models/iris/infer", {"json": {"inputs": "no"}}),
    ("GET", "/v2/models/iris/infer", {}),
    ("PUT", "/models/iris/predict", {"json": ROW}),
    ("POST", "/v1/models/iris:predict", {"json": {"instances": [ROW]}}),
    ("POST", "/v1/models/iris/versions/1:predict", {"json": {"instances": [ROW]}}),
    ("POST", "/v1/models/nope:predict", {"json": {"instances": [ROW]}}),
    ("POST", "/models/regressor/predict", {"json": {"a": -999, "b": 1}}),  # a 500
    ("GET", "/v2/models/iris", {}),
    ("POST", "/nope/predict", {"json": ROW}),
]


def slow(app: Starlette) -> Starlette:
    """``app`` with Starlette's own stack for every request (the router, its error middleware)."""
    app.middleware_stack = Starlette.build_middleware_stack(app)
    return app


def answers(app: Starlette, headers: dict[str, str] | None = None) -> list[tuple[int, bytes, dict[str, str]]]:
    out = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, kwargs in REQUESTS:
            sent = {**kwargs, "headers": {**kwargs.get("headers", {}), **(headers or {}), "x-request-id": "r1"}}
            r = client.request(method, path, **sent)
            out.append((r.status_code, r.content, dict(r.headers)))
    return out


def models() -> list[Any]:
    return [IrisClassifier(), Regressor()]


def test_the_fast_path_answers_as_starlettes_stack() -> None:
    fast = answers(create_app(models(), Settings()))
    assert fast == answers(slow(create_app(models(), Settings())))
    assert {status for status, _, _ in fast} >= {200, 400, 404, 405, 415, 500}


def test_the_fast_path_answers_as_starlettes_stack_with_cors() -> None:
    """CORS adds its headers to an error as to an answer: the error is rendered inside the middleware."""
    settings = Settings(cors_origins=["https://app.example"])
    origin = {"origin": "https://app.example"}
    fast = answers(create_app(models(), settings), origin)
    assert fast == answers(slow(create_app(models(), settings)), origin)
    for status, _, headers in fast:
        if status in (400, 404, 415, 422):
            assert headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("limited", [False, True])
def test_the_fast_path_answers_as_starlettes_stack_with_a_key(tmp_path: Path, limited: bool) -> None:
    """Authentication, the rate limit and the model-access guard: a key limited to another model gets 404s."""
    key = create_key(tmp_path, models=["half_plus_three"] if limited else None)
    settings = Settings(auth="on", state_dir=tmp_path, rate_limit=1000, rate_burst=1000)
    every = [*models(), HalfPlusThree()]
    fast = answers(create_app(every, settings), {"authorization": f"Bearer {key}"})
    assert fast == answers(slow(create_app(every, settings)), {"authorization": f"Bearer {key}"})
    assert fast[0][0] == (404 if limited else 200)
    assert answers(create_app(every, settings)) == answers(slow(create_app(every, settings)))  # no key: 401s


class Rejections(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def request_rejected(self, event: RequestRejected) -> None:
        self.seen.append((event.reason, event.status))


def test_the_fast_path_refuses_keys_as_starlettes_stack(tmp_path: Path) -> None:
    """Authentication's check, made by the fast path's dispatch in place of its layer: the same 401s (unknown key,
    wrong secret, malformed header, two keys that differ, a key in the query string), with CORS's headers, and the
    same refusals counted."""
    key = create_key(tmp_path)
    settings = Settings(auth="on", state_dir=tmp_path, cors_origins=["https://app.example"])
    wrong = key[:-4] + ("0000" if not key.endswith("0000") else "1111")
    sent: list[dict[str, str]] = [
        {"authorization": "Bearer mk_00000000_" + "0" * 64},
        {"authorization": f"Bearer {wrong}"},
        {"authorization": "Basic abc"},
        {"authorization": "Bearer "},
        {"authorization": f"Bearer {key}", "x-api-key": wrong},
        {"x-api-key": wrong},
        {"authorization": "Bearer mk_short"},
    ]
    seen = []
    for app in (create_app(models(), settings), slow(create_app(models(), settings))):
        rejections = Rejections()
        app.state.dataplane.events.subscribe(rejections)
        out = []
        for headers in sent:
            out += answers(app, {**headers, "origin": "https://app.example"})
        with TestClient(app) as client:
            r = client.post(f"/models/iris/predict?api_key={key}", json=ROW, headers={"x-request-id": "r1"})
            out.append((r.status_code, r.content, dict(r.headers)))
        out += answers(app, {"authorization": f"Bearer {key}"})[:1]
        seen.append((out, rejections.seen))
    (fast, fast_rejected), (wanted, wanted_rejected) = seen
    assert fast == wanted and fast_rejected == wanted_rejected
    assert {status for status, _, _ in fast[:-1]} == {401} and fast[-1][0] == 200
    assert fast_rejected.count(("unauthenticated", 401)) == len(fast) - 1  # each 401 counted once


def test_the_fast_path_rate_limits_as_starlettes_stack(tmp_path: Path) -> None:
    """The rate limit's check, made by the fast path's dispatch in place of its layer: a key over its limit gets the
    429 the layer raises on Starlette's stack (rendered by the request context: no route's error style, no CORS
    headers), and so does every route it leaves to the router."""
    key = create_key(tmp_path)
    settings = Settings(
        auth="on", state_dir=tmp_path, rate_limit=0.001, rate_burst=1, cors_origins=["https://app.example"]
    )
    headers = {"authorization": f"Bearer {key}", "origin": "https://app.example"}
    fast = answers(create_app(models(), settings), headers)
    assert RateLimitMiddleware not in layers(create_app(models(), settings))  # its check made by _Dispatch
    wanted = answers(slow(create_app(models(), settings)), headers)

    def without_wait(out: list[tuple[int, bytes, dict[str, str]]]) -> list[tuple[int, bytes, dict[str, str]]]:
        # the seconds to wait depend on when each app's bucket began: asserted, then set aside
        for _, _, sent in out:
            assert sent.pop("retry-after", "1") in ("999", "1000", "1")
        return out

    assert without_wait(fast) == without_wait(wanted)
    assert fast[0][0] == 200 and {status for status, _, _ in fast[1:]} == {429}


def layers(app: Any) -> list[type]:
    """The classes of the fast path's stack, outermost first."""
    app.middleware_stack = app.build_middleware_stack()
    layer, out = app.middleware_stack.fast, []
    while layer is not None:
        out.append(type(layer))
        layer = getattr(layer, "app", None)
    return out


def dispatch_of(app: Any) -> fastpath._Dispatch:
    app.middleware_stack = app.build_middleware_stack()
    layer = app.middleware_stack.fast
    while not isinstance(layer, fastpath._Dispatch):
        layer = layer.app
    return layer


def test_authentication_is_left_out_of_the_fast_path_only_when_it_is_off(tmp_path: Path) -> None:
    """Off, its layer would only pass the inference routes' requests on; the slow stack keeps it (management routes
    are refused there with authentication off). On, the innermost layer, its check is made by ``_Dispatch``."""
    off = create_app(models(), Settings())
    assert AuthMiddleware not in layers(off) and dispatch_of(off).auth is None
    create_key(tmp_path)
    on = create_app(models(), Settings(auth="on", state_dir=tmp_path))
    assert AuthMiddleware not in layers(on)
    dispatch = dispatch_of(on)
    assert isinstance(dispatch.auth, AuthMiddleware) and isinstance(dispatch.rate_limit, RateLimitMiddleware)
    with TestClient(create_app(models(), Settings(management_routes=True))) as client:
        assert client.post("/v2/repository/models/iris/unload").status_code == 403


def test_only_the_inference_routes_take_it(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[str] = []
    dispatch = fastpath._Dispatch.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        taken.append(f"{scope['method']} {scope['path']}")
        await dispatch(self, scope, receive, send)

    monkeypatch.setattr(fastpath._Dispatch, "__call__", spy)
    answers(create_app(models(), Settings()))
    routed = [f"{m} {p.split('?')[0]}" for m, p, _ in REQUESTS]
    left = {"GET /v2/models/iris/infer", "PUT /models/iris/predict", "GET /v2/models/iris", "POST /nope/predict"}
    assert taken == [r for r in routed if r not in left]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/a/infer",
        "/models/a b/predict",
        "/v1/models/x:predict",
        "//x",
        "/a?b",
        "/a#b",
        "/a\\b",
        "/a\tb",
        "/é",
    ],
)
@pytest.mark.parametrize("host", [b"example.com:8080", b"", None])
def test_the_error_path_is_the_urls_path(path: str, host: bytes | None) -> None:
    from starlette.requests import Request

    from modelapi.http.errors import request_path

    headers = [] if host is None else [(b"host", host)]
    scope = {"type": "http", "path": path, "query_string": b"q=1", "headers": headers, "server": ("h", 80)}
    assert request_path(Request(scope)) == Request(scope).url.path


def test_a_repeated_path_is_matched_as_the_first_time() -> None:
    """``FastPath`` keeps recent full matches: a hit leaves what ``route.matches`` leaves, in dicts of its own."""

    async def endpoint(request: Any) -> None:
        raise AssertionError

    routes = [
        ProtocolRoute("/v2/models/{name}/infer", endpoint, methods=["POST"], inference=True),
        ProtocolRoute("/v2/models/{name}/versions/{version}/infer", endpoint, methods=["POST"], inference=True),
    ]
    picker = fastpath.FastPath("slow", "fast", routes)  # type: ignore[arg-type]

    def scope(path: str, method: str = "POST", **more: Any) -> dict[str, Any]:
        return {"type": "http", "path": path, "method": method, "root_path": "", **more}

    def reference(s: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return next((r, c) for r in routes for m, c in [r.matches(s)] if m is Match.FULL)

    for path, root in [
        ("/v2/models/a/infer", ""),
        ("/v2/models/a/versions/2/infer", ""),
        ("/api/v2/models/b/infer", "/api"),
    ]:
        expected = reference(scope(path, root_path=root))
        seen = []
        for _ in range(3):
            s = scope(path, root_path=root)
            assert picker.pick(s) == "fast"
            assert s[fastpath._MATCHED] == expected
            seen.append(s[fastpath._MATCHED][1])
        # each request its own child scope and parameters: a handler changing them changes no other request's
        assert len({id(c) for c in seen}) == 3 and len({id(c["path_params"]) for c in seen}) == 3
        seen[0]["path_params"]["name"] = "changed"
        s = scope(path, root_path=root)
        picker.pick(s)
        assert s[fastpath._MATCHED] == expected
    # another method: the router's (405), matched or not before
    assert picker.pick(scope("/v2/models/a/infer", "GET")) == "slow"
    # parameters already in the scope (a mount's) join the match's: not taken from what was kept
    s = scope("/v2/models/a/infer", path_params={"outer": "1"})
    assert picker.pick(s) == "fast"
    assert s[fastpath._MATCHED][1]["path_params"] == {"outer": "1", "name": "a"}
    # bounded: clients choose the paths
    for i in range(2 * fastpath._MATCHES_KEPT):
        assert picker.pick(scope(f"/v2/models/m{i}/infer")) == "fast"
    assert len(picker._matched) <= fastpath._MATCHES_KEPT
    # a long path (a client's, before authentication) is matched each time, not kept
    picker._matched.clear()
    long = f"/v2/models/{'x' * 60_000}/infer"
    assert picker.pick(scope(long)) == "fast"
    assert picker._matched == {}
