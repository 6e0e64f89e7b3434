"""``GET /openapi.json``: an OpenAPI 3.1 document built once per app from its routes and its models' signatures.

The document is derived from the app's own route table, so it lists every path the app serves and nothing
else. Routes that address a model (``/models/{name}/predict``, ``/v2/models/{name}/infer``...) are written as
one concrete path per served model (``/models/iris/predict``) with that model's schemas and examples. A route
this module has no description for (see ``TEMPLATED``) is still listed, with a ``default`` response.

The operations are described by the registered protocols (``protocols/<name>/openapi.py``: their
``global_ops`` and ``per_model_ops``), their schemas built in ``openapi_schemas.py``; what authentication
adds, when it is on, in ``openapi_security.py``. The document is built once per repository generation and
kept by the routes that serve it (``routes(services)``).

Swagger UI 4 (the version ``swagger-ui-bundle`` ships) reads only OpenAPI 3.0, so ``document_30`` offers the
same document lowered to 3.0 for the docs page; tools read the 3.1 one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import jsonutil
from ..dataplane import DataPlane
from ..models.base import Model
from ..protocols import Protocol, registered
from ..protocols.common import package_version
from ..security.principal import current_principal, is_anonymous, visible_models
from . import openapi_schemas as s
from .openapi_security import Access, secure
from .services import Services

Op = dict[str, Any]
Ops = Callable[["Builder", Model | None], dict[str, Op]]
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def template(path: str) -> str:
    """``/v1/models/{name:modelname}:predict`` -> ``/v1/models/{}:predict``."""
    return _PARAM.sub("{}", path)


_T = TypeVar("_T")


def _fill(path: str, values: list[str]) -> str:
    """Path parameters, in order, replaced by ``values``."""
    it = iter(values)
    return _PARAM.sub(lambda _m: next(it, "_"), path)


class Builder:
    def __init__(
        self, dp: DataPlane, access: Access | None = None, protocols: tuple[Protocol, ...] | None = None
    ) -> None:
        self.dp = dp
        self.access = access or Access()
        self.global_ops: dict[str, Ops] = {}
        self.per_model_ops: dict[str, Ops] = {}
        for protocol in registered() if protocols is None else protocols:
            self.global_ops.update(protocol.global_ops)
            self.per_model_ops.update(protocol.per_model_ops)
        self.schemas: dict[str, s.Schema] = copy.deepcopy(s.COMMON)
        self.keys: dict[str, str] = {}
        for model in dp.models.values():
            key = re.sub(r"[^A-Za-z0-9_-]", "_", model.name) or "model"
            while key in self.keys.values():
                key += "_"
            self.keys[model.name] = key
            self._model_schemas(model, key)

    def _model_schemas(self, model: Model, key: str) -> None:
        sig = model.signature
        self.schemas[f"{key}.Record"] = {**s.record(sig), "title": f"{model.name} record"}
        self.schemas[f"{key}.Answer"] = {**s.answer(sig), "title": f"{model.name} answer"}
        self.schemas[f"{key}.Answers"] = {
            "type": "object",
            "required": ["predictions"],
            "additionalProperties": False,
            "properties": {"predictions": {"type": "array", "items": s.ref(f"{key}.Answer")}},
        }
        self.schemas[f"{key}.V1Request"] = s.v1_request(sig, self.dp.max_rows, f"{key}.Record")
        self.schemas[f"{key}.V1Response"] = s.v1_response(sig)
        self.schemas[f"{key}.V2InferRequest"] = s.v2_request(sig)

    def build(self, routes: list[BaseRoute]) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        other = False  # a route this module has no description for
        # the friendly API first, then KServe V1, then V2, each in the app's order; a path served by several
        # routes (one per method) gets the operations of all of them
        for route in sorted(
            routes, key=lambda r: (getattr(r, "path", "").startswith("/v2"), getattr(r, "path", "").startswith("/v1"))
        ):
            if not isinstance(route, Route) or not route.include_in_schema:
                continue
            methods = sorted(m.lower() for m in (route.methods or {"GET"}) if m != "HEAD")
            key = template(route.path)
            if key in self.per_model_ops:
                describe = self.per_model_ops[key]
                for model in self.dp.models.values():
                    for values, target in self._fills(model, _PARAM.findall(route.path)):
                        path = _fill(route.path, [quote(v, safe="") for v in values])
                        ops = describe(self, target)
                        paths.setdefault(path, {}).update(self._item(path, methods, ops, [model.name]))
            elif key == "/predict" and self.dp.default_model is None:
                continue  # several models: /predict only answers 404, so it is not part of this API
            elif key in self.global_ops:
                describe = self.global_ops[key]
                only = self.dp.default_model
                tags = [only.name] if key == "/predict" and only is not None else ["server"]
                paths.setdefault(route.path, {}).update(self._item(route.path, methods, describe(self, only), tags))
            else:
                path = _PARAM.sub(r"{\1}", route.path)
                known = TEMPLATED[key](self, None) if key in TEMPLATED else {}
                other = other or any(m not in known for m in methods)
                paths.setdefault(path, {}).update(self._item(path, methods, known, ["other"]))
        doc: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {
                "title": "modelapi",
                "version": package_version(),
                "description": (
                    "Models served: " + (", ".join(self.dp.models) or "none") + ". Each model has the friendly "
                    "JSON API (/models/{name}/predict), KServe V1 (/v1/models/{name}:predict) and the Open "
                    "Inference Protocol (/v2/models/{name}/infer). A method a path does not list answers 405 "
                    "with an Allow header; an unknown path answers 404 (so does /predict when several models "
                    "are served). Errors are application/problem+json, except under /v2 where they are "
                    '{"error": ...}.'
                ),
            },
            # Swagger UI renders a tag's description as Markdown: the link to the model's playground page
            "tags": [
                {
                    "name": n,
                    "description": f"model '{n}': [try it in the playground](/models/{quote(n, safe='')}/playground)",
                }
                for n in self.dp.models
            ]
            + [{"name": "server"}]
            + ([{"name": "other"}] if other else []),
            "paths": paths,
            "components": {"schemas": self.schemas},
        }
        return secure(doc, self.access)

    def _fills(self, model: Model, params: list[str]) -> list[tuple[list[str], Model]]:
        """The concrete values of a per-model route's parameters: the name, then every ready version or every
        label of a ready version, each with the model version it reaches."""
        if len(params) < 2:
            return [([model.name], model)]
        entry = self.dp.repository.entry(model.name)
        if params[1] == "label":
            return [
                ([model.name, label], entry.serving[v].model) for label, v in entry.labels.items() if v in entry.serving
            ]
        return [([model.name, v], entry.serving[v].model) for v in entry.ready_versions()]

    def _item(self, path: str, methods: list[str], known: dict[str, Op], tags: list[str]) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for method in methods:
            op = copy.deepcopy(known.get(method)) or {
                "summary": f"{method.upper()} {path}",
                "responses": {"default": {"description": "see the server's documentation"}},
            }
            params = _PARAM.findall(path)
            if params:
                op.setdefault("parameters", []).extend(
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
                )
            op.setdefault("tags", tags)
            op["operationId"] = method + "_" + (re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "index")
            item[method] = op
        return item


#: routes of other modules, documented with their path parameters (as strings); a module may add its own:
#: ``openapi.TEMPLATED["/jobs/{}"] = describe_jobs`` (``describe_jobs(builder, None) -> {"get": {...}}``)
TEMPLATED: dict[str, Ops] = {}


# serving --------------------------------------------------------------------------------------------------
class Documents:
    """The app's documents (3.1, and 3.0 for Swagger UI), built when first asked for and again only when the
    repository changes (a version loaded or retired). ``routes`` gives the route table they describe."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._held: dict[str, tuple[int, Any]] = {}

    def _cached(self, name: str, build: Callable[[], _T]) -> _T:
        generation = self.services.repository.generation
        held = self._held.get(name)
        if held is None or held[0] != generation:
            held = (generation, build())
            self._held[name] = held
        value: _T = held[1]
        return value

    def document(self, routes: list[BaseRoute]) -> dict[str, Any]:
        """The OpenAPI 3.1 document, for the model versions served now."""
        services = self.services
        return self._cached("openapi_document", lambda: Builder(services.dataplane, Access.of(services)).build(routes))

    def document_30(self, routes: list[BaseRoute]) -> dict[str, Any]:
        """The same document lowered to OpenAPI 3.0.3, for Swagger UI 4."""
        return self._cached("openapi_document_30", lambda: {**_lower(self.document(routes)), "openapi": "3.0.3"})

    def response(self, request: Request, version: str) -> Response:
        """``/openapi.json`` (``version`` "3.1") or ``/docs/openapi-3.0.json`` ("3.0") for this request's key."""
        services = self.services
        if is_anonymous(request):  # the same for every caller without a key: built once per generation
            body = self._cached(
                f"openapi_anonymous_{version}", lambda: _versioned(_restricted(services, request), version)
            )
            return Response(body, media_type="application/json")
        restricted = _restricted(services, request)
        if restricted is not None:
            doc = restricted if version == "3.1" else {**_lower(restricted), "openapi": "3.0.3"}
            return Response(jsonutil.dumps(doc), media_type="application/json")
        routes = list(request.app.routes)  # the route table served: a route added later is described too
        build = self.document if version == "3.1" else self.document_30
        body = self._cached(f"openapi_bytes_{version}", lambda: jsonutil.dumps(build(routes)))
        return Response(body, media_type="application/json")


def _versioned(doc: dict[str, Any] | None, version: str) -> bytes:
    assert doc is not None
    return jsonutil.dumps(doc if version == "3.1" else {**_lower(doc), "openapi": "3.0.3"})


def _lower(node: Any) -> Any:
    """3.1 schema constructs this module uses -> 3.0 ones (nullable types, prefixItems)."""
    if isinstance(node, list):
        return [_lower(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _lower(v) for k, v in node.items() if not (k == "items" and v is False)}
    kind = out.get("type")
    if isinstance(kind, list):
        rest = [t for t in kind if t != "null"]
        out["type"] = rest[0] if len(rest) == 1 else "string"
        if "null" in kind:
            out["nullable"] = True
    if isinstance(out.get("examples"), list):  # a schema's examples (a media type's are a map)
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if "prefixItems" in out:
        out["items"] = {"anyOf": out.pop("prefixItems")}
    return out


class _Visible:
    """The part of a data plane the document describes, as a key limited to some models sees it."""

    def __init__(self, dp: DataPlane, names: list[str]) -> None:
        self.models = {n: dp.models[n] for n in names if n in dp.models}
        self.max_rows = dp.max_rows
        self.repository = dp.repository
        only = dp.default_model
        self.default_model = only if only is not None and only.name in self.models else None


def _restricted(services: Services, request: Request) -> dict[str, Any] | None:
    """For a key limited to some models, a document of those models only; for a request without a key while
    authentication is on (the docs page loads it before its user has entered one), one of no models, which
    still declares how to send a key; ``None``: the full one will do."""
    principal = current_principal(request)
    if not is_anonymous(request) and (principal is None or principal.models is None):
        return None
    dp = services.dataplane
    view = _Visible(dp, visible_models(request, dp.models))
    return Builder(cast(DataPlane, view), Access.of(services)).build(list(request.app.routes))


def routes(services: Services, documents: Documents) -> list[BaseRoute]:
    async def openapi_json(request: Request) -> Response:
        return documents.response(request, "3.1")

    return [Route("/openapi.json", openapi_json, methods=["GET"], name="openapi")]


def describe_document(b: Builder, model: Model | None) -> dict[str, Op]:
    return {"get": {"summary": "This document (OpenAPI 3.1)", "responses": s.ok({"type": "object"})}}


def describe_docs(b: Builder, model: Model | None) -> dict[str, Op]:
    return {
        "get": {
            "summary": "Interactive documentation (Swagger UI)",
            "responses": s.ok({"type": "string"}, "an HTML page", "text/html"),
        }
    }
