"""``GET /models/{name}/playground``: a page to try a model in a browser, and the files it loads.

The page is built in the browser from the model's metadata (``GET /models/{name}``): a form from the
signature, Predict through the friendly JSON route, a batch tab through the jobs API, and "copy as" snippets.
It and its assets are public paths (``Protocol.public_paths``): they hold no data, so a browser opens them
without a key; the page's own API calls carry the key its user enters, and the model-access rules apply to
those calls as to any other. The HTML names nothing but the model in the URL (escaped), and whether
authentication is on (so that the page shows a key field).

No CDN and no inline script or style: the page loads ``/playground/assets/playground.{js,css}``, files installed
with the package, under a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute

from ...errors import RouteNotFound
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol
from . import openapi

ASSETS_DIR = Path(__file__).parent / "assets"
#: the files the page loads, with their content types: nothing else under the folder is served
ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
_PAGE = Template((ASSETS_DIR / "playground.html").read_text(encoding="utf-8"))
_ASSET_HEADERS = {"cache-control": "public, max-age=3600"}

#: only this origin: scripts and styles from files, API calls to this server, the chart drawn as SVG by the script
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page_url(name: str) -> str:
    return f"/models/{quote(name, safe='')}/playground"


async def asset(request: Request) -> Response:
    name = request.path_params["file"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise RouteNotFound(f"no asset '{name}' under /playground/assets/")
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers=_ASSET_HEADERS)


def routes(services: Services) -> list[BaseRoute]:
    auth_on = services.auth is not None and services.auth.enabled

    async def playground(request: Request) -> Response:
        # the model is looked up by the page's own call, with the key: here a name is only echoed back
        name = request.path_params["name"]
        page = _PAGE.substitute(
            model=html.escape(name),
            auth="on" if auth_on else "off",
            assets="../../playground/assets",  # relative: the page works under a path prefix too
        )
        return Response(page, media_type="text/html", headers={"content-security-policy": CSP})

    return [
        ProtocolRoute("/models/{name}/playground", playground, methods=["GET"], name="playground"),
        ProtocolRoute(
            "/playground/assets/{file}", asset, methods=["GET"], name="playground_asset", include_in_schema=False
        ),
    ]


PROTOCOL = Protocol(
    "playground",
    routes,
    per_model_ops={"/models/{}/playground": openapi.describe_page},
    public_paths=("/models/{}/playground", "/playground/assets/*"),
)
