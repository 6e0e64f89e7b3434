"""/openapi.json: valid OpenAPI 3.1, every served path, per-model schemas and examples, and truthful answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from modelapi.http import openapi
from modelapi.http.app import create_app
from modelapi.protocols import registered
from modelapi.security.auth import MANAGEMENT_PATHS, OPEN_PATHS, is_management
from modelapi.security.keys import KeyStore
from modelapi.settings import Settings
from toymodels import IRIS_FEATURES, IRIS_LABELS, Echo, IrisClassifier, Regressor

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
Doc = dict[str, Any]


def is_valid(doc: Doc, schema: Doc, instance: Any) -> bool:
    """Whether ``instance`` matches ``schema``, a part of ``doc`` whose $refs point into ``doc``."""
    return bool(jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).is_valid(instance))


def check(doc: Doc, schema: Doc, instance: Any) -> None:
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)


def response_schema(doc: Doc, path: str, method: str, status: int, media: str = "application/json") -> Doc:
    schema: Doc = doc["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    return schema


def request_schema(doc: Doc, path: str) -> Doc:
    schema: Doc = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema


@pytest.fixture
def doc(client: TestClient) -> Doc:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body: Doc = r.json()
    return body


def test_valid_openapi_31(doc: Doc, single_client: TestClient) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    validate(single_client.get("/openapi.json").json())


def test_built_once_per_app(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    build = openapi.Builder.build

    def counting(self: openapi.Builder, routes: Any) -> Doc:
        calls.append(1)
        return build(self, routes)

    monkeypatch.setattr(openapi.Builder, "build", counting)
    first = client.get("/openapi.json").content
    assert client.get("/openapi.json").content == first
    client.get("/docs/openapi-3.0.json")
    assert len(calls) == 1


#: routes that address a model, documented once per model
PER_MODEL = {template for protocol in registered() for template in protocol.per_model_ops}
#: the modules whose routes openapi.py describes itself
DESCRIBED = {
    "modelapi.protocols.records.routes",
    "modelapi.protocols.v1.routes",
    "modelapi.protocols.v2.routes",
    "modelapi.protocols.v2.repository",
    "modelapi.http.openapi",
    "modelapi.http.docs",
}


def served(app_routes: list[Any], models: dict[str, str]) -> dict[str, set[str]]:
    """Every concrete path the app serves (per model where a route takes a model) -> its methods."""
    out: dict[str, set[str]] = {}
    for route in app_routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        params = re.findall(r"\{[^}]+\}", route.path)
        if not params or openapi.template(route.path) not in PER_MODEL:
            out.setdefault(re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", route.path), set()).update(methods)
            continue
        if "{label" in route.path:
            continue  # one path per label: these models have none
        for name, version in models.items():
            values = iter([name, version])
            path = re.sub(r"\{[^}]+\}", lambda _m, v=values: next(v), route.path)  # type: ignore[misc]
            out.setdefault(path, set()).update(methods)
    return out


@pytest.mark.parametrize("fixture", ["client", "single_client"])
def test_every_served_path_is_documented_and_nothing_else(fixture: str, request: pytest.FixtureRequest) -> None:
    c: TestClient = request.getfixturevalue(fixture)
    doc = c.get("/openapi.json").json()
    models = {m["name"]: m["version"] for m in c.get("/models").json()["models"]}
    expected = served(c.app.routes, models)  # type: ignore[attr-defined]
    if len(models) > 1:
        del expected["/predict"]  # answers only 404 while several models are served, so it is left out
    documented = {path: set(item) for path, item in doc["paths"].items()}
    assert documented == expected
    for path in (
        "/",
        "/models",
        "/models/iris/predict",
        "/v1/models/iris:predict",
        "/openapi.json",
        "/docs",
        "/v2/models/iris/infer",
        "/v2/health/ready",
    ):
        assert path in documented
    assert ("/predict" in documented) == (len(models) == 1)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    ours = served([r for r in c.app.routes if getattr(r, "endpoint", None).__module__ in DESCRIBED], models)  # type: ignore[attr-defined]
    assert "/models/iris/predict" in ours
    undescribed = [
        (path, method)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if path in ours and "default" in op["responses"]
    ]
    assert undescribed == []  # the friendly API, V1, V2 and docs routes all have their own descriptions


def test_per_model_record_schema_and_example(doc: Doc) -> None:
    record = doc["components"]["schemas"]["iris.Record"]
    assert list(record["properties"]) == IRIS_FEATURES
    assert record["required"] == IRIS_FEATURES
    assert record["additionalProperties"] is False
    assert all(p["type"] == "number" for p in record["properties"].values())
    body = doc["paths"]["/models/iris/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"]["one record"]["value"] == ROW
    assert body["examples"]["several records"]["value"] == [ROW, ROW]
    echo = doc["components"]["schemas"]["echo.Record"]["properties"]
    assert echo["uint8"]["type"] == "integer"
    assert (echo["uint8"]["minimum"], echo["uint8"]["maximum"]) == (0, 255)
    assert echo["bool"]["type"] == "boolean"
    assert echo["bytes"]["type"] == "string"
    assert echo["fp64"]["type"] == ["number", "null"]  # this model takes missing values
    assert echo["matrix"]["minItems"] == echo["matrix"]["maxItems"] == 2


def test_answer_schema_names_the_classes(doc: Doc) -> None:
    answer = doc["components"]["schemas"]["iris.Answer"]
    assert answer["required"] == ["prediction", "probabilities"]
    assert answer["properties"]["prediction"]["type"] == "string"
    probs = answer["properties"]["probabilities"]
    assert list(probs["properties"]) == list(IRIS_LABELS)
    assert probs["required"] == list(IRIS_LABELS)


def test_query_parameters_for_get(doc: Doc) -> None:
    params = doc["paths"]["/models/iris/predict"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"], p["example"]) for p in params] == [
        (name, "query", True, ROW[name]) for name in IRIS_FEATURES
    ]
    assert set(doc["paths"]["/models/echo/predict"]["get"]["responses"]) == {"400"}


def test_status_codes_and_error_schemas(doc: Doc) -> None:
    post = doc["paths"]["/models/iris/predict"]["post"]["responses"]
    # authentication is off (loopback, no keys): no 401/403, and no 429, since the rate limit is per key
    assert set(post) == {"200", "400", "408", "413", "415", "500", "503", "504"}
    assert post["400"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert set(doc["paths"]["/v1/models/iris:predict"]["post"]["responses"]) >= {"400", "413", "415", "500"}
    infer = doc["paths"]["/v2/models/iris/infer"]["post"]
    assert infer["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/V2Error"
    }
    example = infer["requestBody"]["content"]["application/json"]["examples"]["one row"]["value"]
    assert [t["name"] for t in example["inputs"]] == IRIS_FEATURES
    request = infer["requestBody"]["content"]["application/json"]["schema"]
    assert is_valid(doc, request, example)
    assert not is_valid(doc, request, {"inputs": []})
    assert not is_valid(doc, request, {**example, "inputs": [{**example["inputs"][0], "name": "colour"}] * 4})


def test_single_model_documents_predict(single_client: TestClient) -> None:
    doc = single_client.get("/openapi.json").json()
    assert doc["paths"]["/predict"]["post"]["tags"] == ["iris"]
    assert set(doc["paths"]["/predict"]["post"]["responses"]) >= {"200", "400"}


# the document tells the truth ------------------------------------------------------------------------------
BODIES: list[Any] = [
    ROW,
    [ROW, ROW],
    [],
    {},
    5,
    "x",
    [ROW, 1],
    {**ROW, "extra": 1},
    {**ROW, "sepal_length": "1"},
    {**ROW, "sepal_length": True},
    {**ROW, "sepal_length": None},
    {**ROW, "sepal_length": -2e300},
]


def test_request_schema_agrees_with_the_server(client: TestClient, doc: Doc) -> None:
    schema = request_schema(doc, "/models/iris/predict")
    for body in BODIES:
        r = client.post("/models/iris/predict", json=body)
        assert r.status_code in (200, 400)
        assert is_valid(doc, schema, body) == (r.status_code == 200), (body, r.text)
        if r.status_code == 200:
            check(doc, response_schema(doc, "/models/iris/predict", "post", 200), r.json())
        else:
            check(doc, response_schema(doc, "/models/iris/predict", "post", 400, "application/problem+json"), r.json())


ECHO_CHANGES: list[Doc] = [
    {},
    {"uint8": 256},
    {"int8": -129},
    {"uint64": 2**64 - 1},
    {"uint64": 2**64},
    {"int64": -(2**63)},
    {"int64": -(2**63) - 1},
    {"int64": 2**63},
    {"bool": 0},
    {"bytes": 1},
    {"int32": 1.5},
    {"int32": 2.0},
    {"matrix": [[1, 2, 3]]},
    {"fp32": None},
    {"fp32": "1"},
]


def test_echo_schema_agrees_with_the_server(client: TestClient, doc: Doc) -> None:
    schema = request_schema(doc, "/models/echo/predict")
    example = client.get("/models/echo").json()["example"]["request"]
    for changes in ECHO_CHANGES:
        body = {**example, **changes}
        r = client.post("/models/echo/predict", json=body)
        assert is_valid(doc, schema, body) == (r.status_code == 200), (changes, r.text)
        if r.status_code == 200:
            check(doc, response_schema(doc, "/models/echo/predict", "post", 200), r.json())


def test_answers_match_their_schemas(client: TestClient, doc: Doc) -> None:
    cases = [
        ("get", "/", None),
        ("get", "/models", None),
        ("get", "/models/iris", None),
        ("get", "/v1/models/iris", None),
        ("post", "/models/regressor/predict", [{"a": 999, "b": 1}]),
        ("post", "/v1/models/iris:predict", {"instances": [ROW]}),
        ("post", "/v1/models/iris:predict", {"instances": [list(ROW.values())], "outputs": ["probabilities"]}),
        ("post", "/v1/models/iris:predict", {"inputs": {k: [v] for k, v in ROW.items()}}),
    ]
    for method, path, body in cases:
        r = client.request(method, path, json=body)
        assert r.status_code == 200, r.text
        check(doc, response_schema(doc, path, method, 200), r.json())
        if body is not None:
            check(doc, request_schema(doc, path), body)
    r = client.get("/models/regressor/predict?a=-1&b=2")
    check(doc, response_schema(doc, "/models/regressor/predict", "get", 200), r.json())
    r = client.post("/models/regressor/predict", json={"a": -999, "b": 1})
    check(doc, response_schema(doc, "/models/regressor/predict", "post", 500, "application/problem+json"), r.json())


def test_every_example_is_valid_and_answers_200(client: TestClient, doc: Doc) -> None:
    seen = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            for example in content["examples"].values():
                check(doc, content["schema"], example["value"])
                r = client.request(method, path, json=example["value"])
                assert r.status_code == 200, (path, r.text)
                check(doc, response_schema(doc, path, method, 200), r.json())
                seen += 1
    assert seen >= 12


def test_a_route_without_a_description_is_still_listed(client: TestClient) -> None:
    async def extra(request: Any) -> Any:
        raise NotImplementedError

    client.app.router.routes.append(Route("/extra/{thing:int}", extra, methods=["GET", "PUT"]))  # type: ignore[attr-defined]
    doc = client.get("/openapi.json").json()
    validate(doc)
    item = doc["paths"]["/extra/{thing}"]
    assert set(item) == {"get", "put"}
    assert item["get"]["responses"] == {"default": {"description": "see the server's documentation"}}
    assert item["get"]["parameters"] == [
        {"name": "thing", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert {"name": "other"} in doc["tags"]


def test_other_modules_can_describe_their_routes(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def extra(request: Any) -> Any:
        raise NotImplementedError

    def describe(builder: openapi.Builder, model: Any) -> dict[str, Any]:
        return {"get": {"summary": "one thing", "responses": {"200": {"description": "the thing"}}}}

    monkeypatch.setitem(openapi.TEMPLATED, "/things/{}", describe)
    client.app.router.routes.append(Route("/things/{thing}", extra, methods=["GET"]))  # type: ignore[attr-defined]
    doc = client.get("/openapi.json").json()
    validate(doc)
    assert doc["paths"]["/things/{thing}"]["get"]["summary"] == "one thing"


# authentication: declared exactly when the server enforces it --------------------------------------------
def make_key(state: Path, *, scope: str = "predict", models: list[str] | None = None) -> str:
    store = KeyStore.open(state, None)
    try:
        key, _ = store.create("test", frozenset({scope}), frozenset(models) if models is not None else None, None)
    finally:
        store.close()
    return key


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """Authentication on (three models, management routes, a rate limit of 1/s in bursts of 10), and a key."""
    settings = Settings(
        state_dir=tmp_path, auth="on", management_routes=True, rate_limit=1.0, rate_burst=10, max_rows=1000
    )
    key = make_key(tmp_path)
    with TestClient(create_app([IrisClassifier(), Echo(), Regressor()], settings), raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {key}"}


#: what loads without a key while authentication is on (a key sent is checked): pages, and the API description
PAGES = {"/openapi.json", "/docs", "/models/iris/playground", "/models/echo/playground", "/models/regressor/playground"}


def operations(doc: Doc) -> list[tuple[str, str, Doc]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def error_media(path: str) -> str:
    return "application/json" if path == "/v2" or path.startswith("/v2/") else "application/problem+json"


def test_no_security_is_claimed_when_authentication_is_off(doc: Doc) -> None:
    assert "securitySchemes" not in doc["components"]
    assert "security" not in doc
    for path, method, op in operations(doc):
        assert "security" not in op, (path, method)
        assert not {"401", "403", "429"} & set(op["responses"]), (path, method)


def test_authentication_on_declares_both_ways_to_send_a_key(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, key = keyed
    doc = client.get("/openapi.json", headers=key).json()
    validate(doc)
    assert doc["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mk_<id>_<secret>",
            "description": "the API key as 'Authorization: Bearer <key>'",
        },
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the API key as 'X-API-Key: <key>'",
        },
    }
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]  # two requirements: either will do
    assert "X-API-Key" in doc["info"]["description"]
    lowered = client.get("/docs/openapi-3.0.json", headers=key).json()
    validate(lowered)
    assert lowered["openapi"] == "3.0.3"
    assert lowered["components"]["securitySchemes"] == doc["components"]["securitySchemes"]
    assert lowered["security"] == doc["security"]
    init = client.get("/docs/assets/init.js", headers=key).text
    assert "persistAuthorization: false" in init  # an authorized key stays in the page's memory only


def test_each_operation_says_whether_it_needs_a_key(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, key = keyed
    doc = client.get("/openapi.json", headers=key).json()
    public = {path for path, _, op in operations(doc) if op.get("security") == []}
    assert public == OPEN_PATHS  # the health probes, and nothing else
    assert set(doc["paths"]) >= MANAGEMENT_PATHS
    # the pages and the document: a key is optional (the models it may use appear with it)
    optional = {path for path, _, op in operations(doc) if {} in op.get("security", [])}
    assert optional == PAGES
    for path, method, op in operations(doc):
        responses = op["responses"]
        if path in OPEN_PATHS:
            assert not {"401", "403", "429"} & set(responses), (path, method)
            continue
        if path in PAGES:
            assert op["security"] == [{}, {"bearer": []}, {"apiKey": []}]
            assert {"200", "401", "429"} == set(responses), (path, method)  # a key sent is checked and limited
            continue
        assert "security" not in op  # the document's requirement applies
        media = error_media(path)
        schema = {"$ref": "#/components/schemas/" + ("V2Error" if media == "application/json" else "Problem")}
        assert responses["401"]["content"] == {media: {"schema": schema}}, (path, method)
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert responses["429"]["content"] == {media: {"schema": schema}}, (path, method)
        assert "Retry-After" in responses["429"]["headers"]
        # only the management routes and /metrics need more than the predict scope every key has
        assert ("403" in responses) == (is_management(path) or path == "/metrics"), (path, method)
        if "403" in responses:
            assert responses["403"]["content"] == {media: {"schema": schema}}
        assert list(responses) == sorted(responses, key=lambda code: (code == "default", code))
    for path in ("/models/iris/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"):
        post = doc["paths"][path]["post"]["responses"]
        assert {"401", "429", "503", "504"} <= set(post), path  # each once: a dict key


def test_the_documented_authentication_answers_are_the_real_ones(keyed: tuple[TestClient, dict[str, str]]) -> None:
    client, key = keyed
    doc = client.get("/openapi.json", headers=key).json()
    for path, method, _ in operations(doc):
        r = client.request(method, path)  # no key
        if path in OPEN_PATHS or path in PAGES:
            assert r.status_code == 200, (path, method, r.text)
            continue
        assert r.status_code == 401, (path, method, r.text)
        assert r.headers["www-authenticate"].startswith('Bearer realm="modelapi"')
        assert r.headers["content-type"].startswith(error_media(path))
        check(doc, response_schema(doc, path, method, 401, error_media(path)), r.json())
    r = client.post("/v2/repository/index", headers=key)  # a predict key on a management route
    assert r.status_code == 403
    check(doc, response_schema(doc, "/v2/repository/index", "post", 403), r.json())
    for _ in range(100):  # the burst, spent
        if (r := client.get("/models/iris", headers=key)).status_code == 429:
            break
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    check(doc, response_schema(doc, "/models/iris", "get", 429, "application/problem+json"), r.json())


def test_no_429_without_a_rate_limit_and_security_in_a_limited_keys_document(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, auth="on", rate_limit=0)
    full, limited = make_key(tmp_path), make_key(tmp_path, models=["iris"])
    with TestClient(create_app([IrisClassifier(), Echo()], settings), raise_server_exceptions=False) as client:
        doc = client.get("/openapi.json", headers={"X-API-Key": full}).json()
        assert doc["security"] and all("429" not in op["responses"] for _, _, op in operations(doc))
        assert "401" in doc["paths"]["/models/iris/predict"]["post"]["responses"]
        own = client.get("/openapi.json", headers={"X-API-Key": limited}).json()  # built for this key's models
        assert "/models/echo/predict" not in own["paths"]
        assert own["security"] == doc["security"]
        assert own["components"]["securitySchemes"] == doc["components"]["securitySchemes"]
        assert "401" in own["paths"]["/models/iris/predict"]["post"]["responses"]
        validate(own)
        validate(client.get("/docs/openapi-3.0.json", headers={"X-API-Key": limited}).json())
