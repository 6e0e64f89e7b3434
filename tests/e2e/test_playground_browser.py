"""The playground page (/models/{name}/playground) in headless Chromium against the real server.

What a user does with it: fill the form and predict, see the label and the chart; a refused value shows the
server's message next to its field and takes the last answer off the screen; a CSV batch through the jobs API
shows its rows and downloads; the "copy as" snippets reproduce the request; with authentication on, the page
loads without a key and its calls carry the one entered, which no storage keeps. Screenshots at desktop and
phone width go to the test artefacts (tests/helpers/browser.py).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.browser import DESKTOP, PHONE, chrome, console, csp_refusals, resize, screenshot, wait_for
from helpers.keys import cli_create_key

from .server import RunningServer, serve

IRIS_EXAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("playground")
    args = ("toymodels:IrisClassifier", "toymodels:Subscriber", "--name", "iris", "--name", "subscriber")
    with serve(*args, "--state-dir", str(tmp / "state"), tmp_dir=tmp) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chrome(DESKTOP) as driver:
        yield driver


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def one(driver: Any, selector: str) -> Any:
    found = by_css(driver, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements"
    return found[0]


def open_page(driver: Any, url: str) -> None:
    resize(driver, DESKTOP)
    driver.get(url)
    wait_for(driver, lambda d: by_css(d, "#fields .field"), what="the form built from the signature")


def type_into(element: Any, text: str) -> None:
    element.clear()
    element.send_keys(text)


def predict(driver: Any) -> str:
    before = one(driver, "#result").get_attribute("data-answers")
    one(driver, "#predict").click()
    wait_for(driver, lambda d: one(d, "#result").get_attribute("data-answers") != before, 60, "an answer")
    return str(one(driver, "#result-label").text)


def no_horizontal_overflow(driver: Any) -> bool:
    return bool(driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_form_predicts_and_draws_the_chart_at_desktop_and_phone_width(server: RunningServer, browser: Any) -> None:
    console(browser)  # drop what earlier pages logged
    open_page(browser, f"{server.url}/models/iris/playground")
    fields = {e.get_attribute("name"): e.get_attribute("value") for e in by_css(browser, "#fields input")}
    assert fields == {k: str(v) for k, v in IRIS_EXAMPLE.items()}  # filled with the model's example

    type_into(one(browser, "[name=petal_length]"), "6")
    type_into(one(browser, "[name=petal_width]"), "2.5")
    label = predict(browser)
    expected = httpx.post(
        f"{server.url}/models/iris/predict", json={**IRIS_EXAMPLE, "petal_length": 6, "petal_width": 2.5}
    )
    assert label == expected.json()["prediction"] == "virginica"
    bars = by_css(browser, "#chart svg g.bar")
    assert [b.get_attribute("data-class") for b in bars] == ["setosa", "versicolor", "virginica"]
    top = by_css(browser, "#chart svg g.bar.top")
    assert [b.get_attribute("data-class") for b in top] == ["virginica"]
    widths = [float(b.find_element("css selector", ".bar-fill").get_attribute("width")) for b in bars]
    assert widths[2] == max(widths) and widths[2] > 10 * widths[0]  # the bars follow the probabilities
    assert "version 1" in one(browser, "#result-meta").text
    screenshot(browser, "playground-desktop", DESKTOP)

    resize(browser, PHONE)
    predict(browser)  # the chart is drawn again at the phone's width
    assert no_horizontal_overflow(browser), "the page is wider than a phone's screen"
    chart = one(browser, "#chart svg")
    assert chart.size["width"] <= PHONE[0]
    screenshot(browser, "playground-phone", PHONE)
    assert not csp_refusals(console(browser))


def test_a_refused_value_shows_the_servers_message_next_to_its_field(server: RunningServer, browser: Any) -> None:
    open_page(browser, f"{server.url}/models/iris/playground")
    assert predict(browser) == "setosa"  # an answer on screen, for the example's values
    type_into(one(browser, "[name=sepal_width]"), "abc")
    assert predict(browser) == ""
    # the earlier answer is gone, not left beside the message as if it were this one's
    assert not one(browser, "#result-label").is_displayed() and not by_css(browser, "#chart svg")
    assert one(browser, "#result").get_attribute("data-state") == "refused"
    assert "these values were refused" in one(browser, "#result-empty").text
    assert one(browser, "#result-meta").text.startswith("refused by version 1")  # its Model-Version header
    shown = [e for e in by_css(browser, ".field-error") if e.is_displayed()]
    assert len(shown) == 1
    field = shown[0].find_element("xpath", "..")
    assert field.get_attribute("data-field") == "sepal_width"
    assert "'sepal_width' expected a number, got string 'abc'" in shown[0].text
    assert one(browser, "[name=sepal_width]").get_attribute("aria-invalid") == "true"
    assert not one(browser, "#form-error").is_displayed()
    screenshot(browser, "playground-error-desktop", DESKTOP)

    type_into(one(browser, "[name=sepal_width]"), "3.5")  # editing the field clears its message
    assert not any(e.is_displayed() for e in by_css(browser, ".field-error"))
    assert predict(browser) == "setosa" and by_css(browser, "#chart svg")  # answered again
    assert one(browser, "#result").get_attribute("data-state") == "answered"
    assert not one(browser, "#result-empty").is_displayed()


def test_categories_are_a_select_booleans_a_checkbox_and_snippets_reproduce_the_request(
    server: RunningServer, browser: Any
) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, f"{server.url}/models/subscriber/playground")
    plan = Select(one(browser, "select[name=plan]"))
    assert [o.text for o in plan.options] == ["basic", "pro", "team"]
    assert plan.first_selected_option.text == "pro"  # the example
    active = one(browser, "input[name=active]")
    assert active.get_attribute("type") == "checkbox" and active.is_selected()

    plan.select_by_visible_text("basic")
    active.click()
    type_into(one(browser, "[name=age]"), "30")
    record = {"age": 30, "plan": "basic", "active": False}
    label = predict(browser)
    assert label == httpx.post(f"{server.url}/models/subscriber/predict", json=record).json()["prediction"] == "no"

    body = json.dumps(record, separators=(",", ":"))
    target = f"{server.url}/models/subscriber/predict"
    snippets = {}
    for lang in ("curl", "python", "javascript"):
        one(browser, f".snippet-tab[data-lang={lang}]").click()
        snippets[lang] = one(browser, "#snippet").text
    assert snippets["curl"] == (f"curl -s '{target}' \\\n  -H 'Content-Type: application/json' \\\n  -d '{body}'")
    assert snippets["python"] == (
        "from modelapi import Client\n"
        f'client = Client("{server.url}")\n'
        'print(client.predict("subscriber", {"age": 30, "plan": "basic", "active": False}))'
    )
    assert snippets["javascript"] == (
        f'const response = await fetch("{target}", {{\n'
        '  method: "POST",\n'
        '  headers: {"Content-Type": "application/json"},\n'
        f"  body: JSON.stringify({body}),\n"
        "});\n"
        "console.log(await response.json());"
    )
    # the curl snippet, run by a shell, and the JavaScript one, run in the page, get the answer the form got
    curl = subprocess.run(["bash", "-c", snippets["curl"]], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(curl.stdout)["prediction"] == label
    answer = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {snippets['javascript'].replace('console.log(', 'done(')} }})();"
    )
    assert answer["prediction"] == label
    screenshot(browser, "playground-categories-desktop", DESKTOP)


def iris_csv(rows: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(IRIS_EXAMPLE))
    for i in range(rows):
        writer.writerow([4.5 + (i % 30) * 0.1, 3.0, 1.0 + (i % 6), 0.2 + (i % 3) * 0.8])
    return out.getvalue()


def test_a_csv_batch_shows_its_rows_and_downloads_them(server: RunningServer, browser: Any, tmp_path: Path) -> None:
    open_page(browser, f"{server.url}/models/iris/playground")
    one(browser, "#tab-batch").click()
    assert one(browser, "#batch-columns").text == ", ".join(IRIS_EXAMPLE)
    path = tmp_path / "batch.csv"
    path.write_text(iris_csv(25))
    one(browser, "#csv-file").send_keys(str(path))
    one(browser, "#batch-run").click()
    wait_for(browser, lambda d: one(d, "#batch-result").is_displayed(), 90, "the batch's predictions")
    rows = by_css(browser, "#batch-table tbody tr")
    assert len(rows) == 25
    header = [th.text for th in by_css(browser, "#batch-table thead th")]
    assert header == [
        "row",
        "prediction",
        "probabilities.setosa",
        "probabilities.versicolor",
        "probabilities.virginica",
    ]
    records = list(csv.DictReader(io.StringIO(iris_csv(25))))
    direct = httpx.post(
        f"{server.url}/models/iris/predict", json=[{k: float(v) for k, v in r.items()} for r in records]
    ).json()["predictions"]
    shown = [row.find_elements("css selector", "td")[1].text for row in rows]
    assert shown == [answer["prediction"] for answer in direct]
    assert one(browser, "#batch-progress").get_attribute("value") == "100"
    assert "25 of 25 rows" in one(browser, "#batch-progress-text").text
    screenshot(browser, "playground-batch-desktop", DESKTOP)

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    one(browser, "#batch-download").click()
    deadline = time.monotonic() + 30
    while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)
    [saved] = list(downloads.glob("*.csv"))
    assert saved.name == "iris-predictions.csv"
    table = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [r["prediction"] for r in table] == [answer["prediction"] for answer in direct]

    resize(browser, PHONE)
    assert no_horizontal_overflow(browser)  # the wide table scrolls inside its box
    screenshot(browser, "playground-batch-phone", PHONE)


def test_a_csv_the_server_refuses_shows_its_message(server: RunningServer, browser: Any, tmp_path: Path) -> None:
    open_page(browser, f"{server.url}/models/iris/playground")
    one(browser, "#tab-batch").click()
    path = tmp_path / "wrong.csv"
    path.write_text("sepal_length,colour\n5.1,red\n")
    one(browser, "#csv-file").send_keys(str(path))
    one(browser, "#batch-run").click()
    wait_for(browser, lambda d: one(d, "#batch-error").is_displayed(), 30, "the refusal")
    text = one(browser, "#batch-error").text
    assert "missing" in text and "sepal_width" in text and "colour" in text


def test_with_authentication_the_page_loads_without_a_key_and_its_calls_carry_the_one_entered(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    key = cli_create_key(state)
    other = cli_create_key(state, "--models", "subscriber")
    args = ("toymodels:IrisClassifier", "toymodels:Subscriber", "--name", "iris", "--name", "subscriber")
    with serve(*args, "--auth", "on", "--state-dir", str(state), tmp_dir=tmp_path) as server:
        page = httpx.get(f"{server.url}/models/iris/playground")
        assert page.status_code == 200 and 'data-auth="on"' in page.text
        assert "setosa" not in page.text and "sepal_length" not in page.text  # the page holds no data
        for asset in ("playground.js", "playground.css"):
            assert httpx.get(f"{server.url}/playground/assets/{asset}").status_code == 200
        assert httpx.get(f"{server.url}/models/iris").status_code == 401  # its API calls still need a key

        with chrome(DESKTOP) as driver:
            driver.get(f"{server.url}/models/iris/playground")
            wait_for(driver, lambda d: "API key" in one(d, "#status").text, what="the request for a key")
            assert one(driver, "#api-key").is_displayed()

            type_into(one(driver, "#api-key"), other)  # a key limited to another model: 404, as for any call
            one(driver, "#key-apply").click()
            wait_for(driver, lambda d: "no model named 'iris'" in one(d, "#status").text, what="the 404")

            type_into(one(driver, "#api-key"), key)
            one(driver, "#key-apply").click()
            wait_for(driver, lambda d: by_css(d, "#fields .field"), what="the form")
            assert predict(driver) == "setosa"
            one(driver, ".snippet-tab[data-lang=python]").click()
            python = one(driver, "#snippet").text
            assert f'client = Client("{server.url}", api_key="YOUR_API_KEY")' in python
            # the batch's calls (upload, progress, result) carry the key too
            one(driver, "#tab-batch").click()
            path = tmp_path / "batch.csv"
            path.write_text(iris_csv(3))
            one(driver, "#csv-file").send_keys(str(path))
            one(driver, "#batch-run").click()
            wait_for(driver, lambda d: one(d, "#batch-result").is_displayed(), 90, "the batch's predictions")
            assert len(by_css(driver, "#batch-table tbody tr")) == 3
            one(driver, "#tab-form").click()
            assert key not in driver.page_source  # the key is never written into the page
            kept = driver.execute_script(
                "return [localStorage.length, sessionStorage.length, document.cookie, location.href]"
            )
            assert kept == [0, 0, "", f"{server.url}/models/iris/playground"]
            screenshot(driver, "playground-auth-desktop", DESKTOP)
            assert not csp_refusals(console(driver))


def test_the_batch_names_the_default_versions_inputs_whichever_version_the_form_shows(
    browser: Any, tmp_path: Path
) -> None:
    """Jobs run on the default version: choosing another version for the form (here one with an array input
    where the default takes named features) must not change the columns the batch asks for."""
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from helpers.repo import skops_bytes

    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "2").mkdir()
    (repo / "m" / "1" / "model.skops").write_bytes(skops_bytes("one"))
    x = pd.DataFrame({"f1": [0.0, 1.0, 2.0, 3.0], "f2": [1.0, 0.0, 1.0, 0.0], "f3": [0.5, 0.5, 1.5, 1.5]})
    sio.dump(LogisticRegression().fit(x, [0, 0, 1, 1]), repo / "m" / "2" / "model.skops")
    (repo / "m" / "model.toml").write_text('version_policy = "all"\n')
    with serve(str(repo), "--state-dir", str(tmp_path / "state"), tmp_dir=tmp_path) as server:
        open_page(browser, f"{server.url}/models/m/playground")
        assert one(browser, "#batch-columns").get_attribute("textContent") == "f1, f2, f3"
        from selenium.webdriver.support.ui import Select

        Select(one(browser, "#version")).select_by_value("1")
        wait_for(browser, lambda d: "Version 1" in one(d, "#status").text, 30, "version 1's form")
        assert [f.get_attribute("id") for f in by_css(browser, "#fields .field input, #fields .field textarea")] == [
            "field-0"
        ]
        one(browser, "#tab-batch").click()
        assert one(browser, "#batch-columns").text == "f1, f2, f3"
