"""Headless Chromium driven by Selenium, for the tests of pages (the playground, /docs).

Debian's ``chromium`` and ``chromium-driver`` are used as installed: the driver's path is passed explicitly and
``SE_OFFLINE`` is set, so Selenium Manager never downloads a browser or a driver. Without them the tests skip on
a laptop, and fail when ``CI=true``. Screenshots go to ``$MODELAPI_TEST_ARTIFACTS`` (else ``test-artifacts/``
under the repository root, git-ignored), for a person to look at after a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DESKTOP = (1280, 900)
PHONE = (390, 844)


def _require(what: str, found: str | None, install: str) -> str:
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required in CI ({install})")
        pytest.skip(f"{what} is not installed ({install})")
    return found


def artifacts_dir() -> Path:
    path = Path(os.environ.get("MODELAPI_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chrome(size: tuple[int, int] = DESKTOP) -> Iterator[Any]:
    """A headless Chromium session at ``size`` (CSS pixels), its console kept (``console(driver)``)."""
    browser = _require(
        "chromium", shutil.which("chromium") or shutil.which("chromium-browser"), "apt-get install chromium"
    )
    driver_path = _require("chromedriver", shutil.which("chromedriver"), "apt-get install chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require("selenium", None, "pip install -e '.[dev]'")
        raise
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def resize(driver: Any, size: tuple[int, int]) -> None:
    """The viewport (not the window) at ``size``: what a phone of that width shows."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size[0] < 600},
    )


def console(driver: Any) -> list[str]:
    """The browser console's messages since the last call."""
    return [entry["message"] for entry in driver.get_log("browser")]


def csp_refusals(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 60.0, what: str = "") -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what or condition}; console: {console(driver)}") from None


def screenshot(driver: Any, name: str, size: tuple[int, int]) -> Path:
    """A full-page screenshot at ``size``'s width under the artefacts directory; the viewport left at ``size``."""
    path = artifacts_dir() / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    resize(driver, (size[0], max(int(height), size[1])))
    try:
        driver.save_screenshot(str(path))
    finally:
        resize(driver, size)
    return path
