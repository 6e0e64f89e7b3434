"""The drift report (``modelapi monitor --html``) rendered by headless Chromium: one chart per feature, the drift
table and the prediction mix, with nothing fetched from anywhere (a screenshot is kept for people to look at)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.monitor import FEATURES, write_log

from .test_docs_browser import chromium

SCREENSHOT_DIR = Path(os.environ.get("MODELAPI_SCREENSHOTS", "/tmp"))


def browser(path: str, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            path,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--log-level=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_report_renders_with_a_chart_per_feature(tmp_path: Path) -> None:
    path = chromium()
    write_log(tmp_path / "state")
    report = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "modelapi", "monitor", "shift", "--state-dir", str(tmp_path / "state"),
         "--since", "1d", "--html", str(report)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    dom = browser(path, "--dump-dom", report.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = re.findall(r'<svg [^>]*aria-label="([^"]+)"', dom.stdout)
    assert [c.split(":")[0] for c in charts] == [*FEATURES, "city", "label per hour"]
    assert '<table id="drift">' in dom.stdout
    # nothing was requested from the network: no resource is named, and the console has no load error
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line], dom.stderr[-2000:]

    shot = SCREENSHOT_DIR / "modelapi-monitor-report.png"
    shot.unlink(missing_ok=True)
    taken = browser(
        path, f"--screenshot={shot}", "--window-size=1240,1400", "--hide-scrollbars", report.as_uri(),
        profile=tmp_path / "p2",
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # charts drawn, not a blank page
