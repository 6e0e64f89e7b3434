"""The playground's page and files over HTTP in-process: what a browser gets, under which policy.

The page itself is tried in headless Chromium in tests/e2e/test_playground_browser.py.
"""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from modelapi.protocols.playground.routes import ASSETS, ASSETS_DIR, CSP


def test_the_page_loads_its_own_files_under_a_strict_policy(client: TestClient) -> None:
    r = client.get("/models/iris/playground")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "style-src 'self'" in CSP and "unsafe" not in CSP
    assert "frame-ancestors 'none'" in CSP and "connect-src 'self'" in CSP
    page = r.text
    assert 'data-model="iris"' in page
    # no inline script or style, and nothing from another origin
    assert re.findall(r"<script[^>]*>", page) == ['<script src="../../playground/assets/playground.js">']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_the_files_are_served_with_their_types_and_nothing_else_is(client: TestClient) -> None:
    for name, media_type in ASSETS.items():
        r = client.get(f"/playground/assets/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == media_type
        assert r.content == (ASSETS_DIR / name).read_bytes()
        assert "max-age" in r.headers["cache-control"]
    for name in ("playground.html", "routes.py", "..", "%2e%2e%2froutes.py"):
        assert client.get(f"/playground/assets/{name}").status_code == 404, name


def test_a_model_name_is_echoed_escaped(client: TestClient) -> None:
    r = client.get("/models/%3Cimg%20src%3Dx%3E%22/playground")
    assert r.status_code == 200
    assert "<img" not in r.text and 'data-model="&lt;img src=x&gt;&quot;"' in r.text


def test_the_script_uses_no_eval_and_no_html_injection() -> None:
    script = (ASSETS_DIR / "playground.js").read_text()
    for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert banned not in script, banned
    for banned in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert banned not in script, banned  # the API key lives in a variable only
