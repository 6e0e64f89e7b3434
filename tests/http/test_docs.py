"""/docs: Swagger UI from the app's own files, no CDN, no inline script, under a strict CSP."""

from __future__ import annotations

import re
from urllib.parse import urljoin

from openapi_spec_validator import validate
from starlette.testclient import TestClient

from modelapi.http.docs import ASSETS

BASE = "http://testserver/docs"


def references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_page(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<div id="swagger-ui">' in r.text
    assert "iris, echo, regressor" in r.text  # the title names the models


def test_csp_allows_only_this_origin(client: TestClient) -> None:
    csp = client.get("/docs").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert "http" not in csp


def test_no_inline_script_and_only_local_assets(client: TestClient) -> None:
    html = client.get("/docs").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == 2
    assert all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert "style=" not in html
    assert "<style" not in html
    refs = references(html)
    assert refs
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), ref


def test_every_referenced_asset_is_served(client: TestClient) -> None:
    expected = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8", "png": "image/png"}
    refs = [ref for ref in references(client.get("/docs").text) if ref != "openapi.json"]
    assert {ref.rsplit("/", 1)[-1] for ref in refs} >= {"swagger-ui-bundle.js", "swagger-ui.css", "init.js"}
    for ref in refs:
        url = urljoin(BASE, ref)
        assert url.startswith("http://testserver/docs/assets/"), url
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"] == expected[ref.rsplit(".", 1)[-1]], url
        assert len(r.content) > 100
    assert client.get(urljoin(BASE, "openapi.json")).status_code == 200  # the <noscript> link


def test_initializer_loads_a_local_document_swagger_ui_can_read(client: TestClient) -> None:
    init = client.get("/docs/assets/init.js").text
    url = re.search(r'url: "([^"]+)"', init)
    assert url is not None
    assert "validatorUrl: null" in init  # no call to the public validator
    r = client.get(urljoin(BASE, url.group(1)))
    assert r.status_code == 200
    lowered = r.json()
    assert lowered["openapi"].startswith("3.0.")  # Swagger UI 4 reads OpenAPI 3.0 only
    validate(lowered)
    assert not re.search(r'"type":\[|"prefixItems"|"examples":\[', r.text)  # no 3.1-only schema forms left
    assert lowered["paths"].keys() == client.get("/openapi.json").json()["paths"].keys()


def test_only_the_bundle_files_are_served(client: TestClient) -> None:
    for name in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "nope.js", "swagger-ui.js.map"):
        r = client.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
        assert r.headers["content-type"] == "application/problem+json"
    assert set(ASSETS) == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"}


def test_assets_may_be_cached_but_not_the_page(client: TestClient) -> None:
    assert client.get("/docs").headers["cache-control"] == "no-store"
    assert "max-age" in client.get("/docs/assets/swagger-ui.css").headers["cache-control"]
