"""``GET /docs``: Swagger UI served entirely by the app, from the files of the installed ``swagger_ui_bundle``.

No CDN and no inline script: the page loads the bundle and a small initializer from ``/docs/assets/``, under
a Content-Security-Policy that allows only this origin. Swagger UI 4 reads OpenAPI 3.0, so the page loads
``/docs/openapi-3.0.json`` (``/openapi.json`` lowered to 3.0; see ``openapi.py``). With authentication on, the
document declares the key's two headers, so the page's Authorize button takes a key and "Try it out" sends it.

The page, its assets and the documents are public paths: a browser opens them without a key. Without one the
document describes no model (the routes, and how to send a key); once a key is entered with Authorize, the
initializer fetches the document again with it, and the models that key may use appear. The key stays in the
page's memory (no ``persistAuthorization``): reloading the page forgets it, and no storage holds it.
"""

from __future__ import annotations

import html
from pathlib import Path

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute

from ..errors import RouteNotFound
from ..protocols.base import Protocol
from ..security.principal import is_anonymous, visible_models
from . import openapi
from .routing import ProtocolRoute
from .services import Services

ASSETS_DIR = Path(swagger_ui_bundle.swagger_ui_path)

#: the bundle's files the page uses, with their content types
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

#: our own initializer, served as a file so the page needs no inline script
INIT_JS = """\
"use strict";
window.addEventListener("load", function () {
  var ui = null;
  // the key entered with Authorize (kept by Swagger UI in memory only), for the document's own request
  function authorizedKey() {
    var held = ui ? ui.authSelectors.authorized() : null;
    var found = null;
    if (held) {
      held.forEach(function (entry) {
        var value = entry && entry.get ? entry.get("value") : null;
        if (typeof value === "string" && value) { found = value; }
      });
    }
    return found;
  }
  // the document lists the models a key may use: fetch it again when a key is entered or dropped
  function refetchDocument(system) {
    window.setTimeout(function () { system.specActions.download(); }, 0);
  }
  function ReloadOnAuthorize(system) {
    function wrap(action) {
      return function (payload) {
        var result = action(payload);
        refetchDocument(system);
        return result;
      };
    }
    return {statePlugins: {auth: {wrapActions: {authorize: wrap, logout: wrap}}}};
  }
  ui = SwaggerUIBundle({
    url: "docs/openapi-3.0.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    displayRequestDuration: true,
    persistAuthorization: false,
    plugins: [ReloadOnAuthorize],
    requestInterceptor: function (request) {
      var key = request.loadSpec ? authorizedKey() : null;
      if (key) { request.headers["Authorization"] = "Bearer " + key; }
      return request;
    },
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
  window.ui = ui;
});
"""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" sizes="32x32" href="docs/assets/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="docs/assets/favicon-16x16.png">
</head>
<body>
<noscript>This page needs JavaScript. The API description is at <a href="openapi.json">/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/init.js"></script>
</body>
</html>
"""

_ASSET_HEADERS = {"cache-control": "public, max-age=3600"}


async def asset(request: Request) -> Response:
    name = request.path_params["file"]
    if name == "init.js":
        return Response(INIT_JS, media_type="text/javascript", headers=_ASSET_HEADERS)
    media_type = ASSETS.get(name)
    if media_type is None:
        raise RouteNotFound(f"no asset '{name}' under /docs/assets/")
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers=_ASSET_HEADERS)


def routes(services: Services) -> list[BaseRoute]:
    """``/openapi.json``, ``/docs`` and what the page loads, over one cache of the documents."""
    documents = openapi.Documents(services)

    async def docs_page(request: Request) -> Response:
        if is_anonymous(request):  # no key yet: the page names no model
            title = "modelapi"
        else:
            title = "modelapi: " + (", ".join(visible_models(request, services.dataplane.models)) or "no models")
        page = _PAGE.format(title=html.escape(title))
        return Response(page, media_type="text/html", headers={"content-security-policy": CSP})

    async def openapi_30_json(request: Request) -> Response:
        return documents.response(request, "3.0")

    return [
        *openapi.routes(services, documents),
        ProtocolRoute("/docs", docs_page, methods=["GET"], name="docs"),
        ProtocolRoute(
            "/docs/openapi-3.0.json", openapi_30_json, methods=["GET"], name="openapi_30", include_in_schema=False
        ),
        ProtocolRoute("/docs/assets/{file}", asset, methods=["GET"], name="docs_asset", include_in_schema=False),
    ]


#: the API's own description, served like a protocol (problem+json errors), registered in ``protocols``
PROTOCOL = Protocol(
    "docs",
    routes,
    global_ops={"/openapi.json": openapi.describe_document, "/docs": openapi.describe_docs},
    # the page and its assets hold no data; the documents describe no model to a caller without a key
    public_paths=("/docs", "/docs/assets/*", "/docs/openapi-3.0.json", "/openapi.json"),
)
