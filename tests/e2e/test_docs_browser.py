"""/docs rendered by a real browser (headless Chromium) against the real server: no network beyond loopback."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers.keys import cli_create_key

from .server import serve

OPEN_PROBES = {"/v2/health/live", "/v2/health/ready", "/ping", "/health"}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def render(browser: str, url: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """The DOM of ``url`` once its scripts have run (15 s of virtual time), and the browser's console on stderr."""
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--enable-logging=stderr",
            "--log-level=0",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def csp_refusals(result: subprocess.CompletedProcess[str]) -> list[str]:
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return [line for line in console if "Content Security Policy" in line or "Refused" in line]


def test_docs_render_the_models_operations(tmp_path: Path) -> None:
    browser = chromium()
    with serve("toymodels:IrisClassifier", "--name", "iris", tmp_dir=tmp_path) as server:
        result = render(browser, f"{server.url}/docs#/iris/post_models_iris_predict", tmp_path / "profile")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unable to render" not in dom
    assert 'data-path="/models/iris/predict"' in dom, dom[-2000:]
    assert 'data-path="/v1/models/iris:predict"' in dom
    assert "sepal_length" in dom  # the expanded operation shows the model's example record
    assert 'href="/models/iris/playground"' in dom  # the model's tag links to its playground
    # authentication is off (loopback, no keys): no Authorize button, no locks
    assert "btn authorize" not in dom and "authorization__btn" not in dom
    assert not csp_refusals(result), result.stderr[-2000:]


@contextlib.contextmanager
def header_adding_proxy(upstream: str, key: str) -> Iterator[str]:
    """A loopback proxy to ``upstream`` that adds ``X-API-Key`` to every GET: the tool that adds the header,
    which docs/security.md suggests for browsing /docs on a server with authentication on."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            r = httpx.get(upstream + self.path, headers={"X-API-Key": key}, timeout=30)
            self.send_response(r.status_code)
            for name, value in r.headers.items():
                if name.lower() not in {"content-length", "content-encoding", "transfer-encoding", "connection"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, format: str, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)


def test_docs_with_authentication_offer_authorize_and_lock_exactly_the_protected_operations(tmp_path: Path) -> None:
    browser = chromium()
    state = tmp_path / "state"
    key = cli_create_key(state)
    args = ("toymodels:IrisClassifier", "--name", "iris", "--auth", "on", "--state-dir", str(state))
    with serve(*args, tmp_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 200  # the page itself needs no key (it holds no data)
        with header_adding_proxy(server.url, key) as url:
            spec = httpx.get(f"{url}/docs/openapi-3.0.json").json()
            result = render(browser, f"{url}/docs", tmp_path / "profile")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unable to render" not in dom
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert 'class="btn authorize unlocked"' in dom, dom[-2000:]  # the Authorize button opens the key dialog
    # every operation block, by path: a lock on each one the document protects, none on the health probes
    blocks: list[tuple[str, bool]] = []
    for block in dom.split('<div class="opblock opblock-')[1:]:
        path = re.search(r'data-path="([^"]+)"', block)
        assert path is not None, block[:500]
        blocks.append((path.group(1), "authorization__btn" in block))
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    assert len(blocks) == sum(len(methods & set(item)) for item in spec["paths"].values())
    assert {path for path, _ in blocks} == set(spec["paths"])
    assert {path for path, lock in blocks if not lock} == OPEN_PROBES
    assert not csp_refusals(result), result.stderr[-2000:]


def test_docs_open_without_a_key_and_show_the_models_once_one_is_authorized(tmp_path: Path) -> None:
    """A plain browser opens /docs on a server with keys; Authorize fetches the document again with the key,
    which Swagger UI keeps in the page's memory only."""
    from selenium.webdriver.common.by import By

    from helpers.browser import DESKTOP, chrome, console, screenshot, wait_for

    state = tmp_path / "state"
    key = cli_create_key(state)
    args = ("toymodels:IrisClassifier", "--name", "iris", "--auth", "on", "--state-dir", str(state))
    with serve(*args, tmp_dir=tmp_path) as server, chrome(DESKTOP) as driver:
        driver.get(f"{server.url}/docs")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".btn.authorize"), what="the Authorize button")
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-path="/models/iris/predict"]')  # no model yet
        assert driver.find_elements(By.CSS_SELECTOR, '[data-path="/docs"]')
        driver.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
        section = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".auth-container"), what="the dialog")[0]
        section.find_element(By.CSS_SELECTOR, "input").send_keys(key)
        section.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .authorize").click()
        wait_for(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, '[data-path="/models/iris/predict"]'),
            what="the model's operations, after Authorize",
        )
        for close in driver.find_elements(By.CSS_SELECTOR, ".modal-ux .close-modal"):
            close.click()
        # still authorized after the document was fetched again: "Try it out" sends the key
        assert driver.find_elements(By.CSS_SELECTOR, ".btn.authorize.locked")
        predict_op = driver.find_element(By.CSS_SELECTOR, '.opblock-post [data-path="/models/iris/predict"]')
        predict_op.click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".try-out__btn"), what="Try it out")[0].click()
        driver.find_element(By.CSS_SELECTOR, ".execute").click()
        wait_for(
            driver, lambda d: "setosa" in d.find_element(By.CSS_SELECTOR, ".responses-wrapper").text, what="the answer"
        )
        assert driver.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [
            0,
            0,
            "",
        ]
        screenshot(driver, "docs-authorized-desktop", DESKTOP)
        refusals = [m for m in console(driver) if "Content Security Policy" in m or "Refused" in m]
        assert not refusals
