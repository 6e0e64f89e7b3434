"""``modelapi monitor``: the report's content (a browser renders it in tests/e2e/test_monitor_browser.py)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.monitor import CITIES, FEATURES, write_log
from helpers.services import postgres_schema
from modelapi.cli import main
from modelapi.monitor.service import Monitor
from modelapi.settings import Settings


def test_the_report_has_the_drift_table_a_chart_per_feature_and_the_mix(tmp_path: Path, capsys: object) -> None:
    write_log(tmp_path)
    out = tmp_path / "report.html"
    assert main(["monitor", "shift", "--state-dir", str(tmp_path), "--since", "1d", "--html", str(out)]) == 0
    html = out.read_text()
    # self-contained: no script, no stylesheet or image fetched from anywhere
    assert "<script" not in html and not re.search(r"(src|href)=", html)
    charts = re.findall(r'<svg [^>]*aria-label="([^"]+)"', html)
    assert len(charts) == len(FEATURES) + 1 + 1  # x1..x3, city, and the prediction mix
    assert [c.split(":")[0] for c in charts[:4]] == [*FEATURES, "city"]
    assert charts[-1] == "label per hour"
    table = html[html.index("<table id='drift'>") :]
    first_row = re.search(r"<tr class='(\w+)'><td class='l'>1</td><td class='l'>(\w+)</td>", table)
    assert first_row is not None and first_row.groups() == ("major", "x2")  # the worst first


def test_without_html_the_status_is_printed_as_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    write_log(tmp_path, hours=2)
    assert main(["monitor", "shift", "--state-dir", str(tmp_path), "--since", "3h"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["model"] == "shift"
    assert set(status["versions"]["1"]) == {"last_rows", "last_hour", "last_day", "since"}
    assert status["versions"]["1"]["since"]["rows"] == 800


def test_a_bad_since_is_an_error_naming_it(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(SystemExit):
        main(["monitor", "shift", "--since", "7 days"])
    assert "expected a duration such as 90s, 30m, 12h, 7d or 2w" in capsys.readouterr().err


def test_an_unreachable_database_is_one_line_without_its_password(capsys) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://user:s3cret@127.0.0.1:1/none"  # nothing listens on port 1
    assert main(["monitor", "shift", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelapi: error: the prediction log's database cannot be used: ")
    assert "Traceback" not in err and "s3cret" not in err and err.count("\n") == 1


def test_a_sensitive_input_is_named_beside_the_features_not_shown_as_one_without_rows(
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    """``city`` is marked sensitive: never logged, so no drift. The server's status names it in ``sensitive``
    and lists no feature for it (not one of 0 rows, severity unknown), nor summarises it in the reference, though
    the training file holds it; ``modelapi monitor``, which reads no model.toml, learns it from the reference the
    server stored, in its JSON and in its report."""
    state = tmp_path / "state"
    write_log(state, sensitive=("city",))
    root = tmp_path / "repo"
    (root / "shift").mkdir(parents=True)
    (root / "shift" / "model.toml").write_text('[monitor]\nreference = "train.parquet"\nsensitive = ["city"]\n')
    rng = np.random.default_rng(5)
    columns = {f: rng.normal(0.0, 1.0, 500) for f in FEATURES}
    pq.write_table(pa.table({**columns, "city": rng.choice(CITIES, 500)}), root / "shift" / "train.parquet")

    server = Monitor.from_settings(Settings(models=[str(root)], state_dir=state))
    try:
        status = server.status("shift")
        stored = server.store.load_reference("shift")
    finally:
        server.store.close()
    assert status["sensitive"] == ["city"]
    for window in status["versions"]["1"].values():
        assert sorted(f["feature"] for f in window["features"]) == sorted(FEATURES)
    assert stored is not None and "city" not in stored["features"] and stored["sensitive"] == ["city"]

    assert main(["monitor", "shift", "--state-dir", str(state), "--since", "1d"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sensitive"] == ["city"]
    assert all("city" not in [f["feature"] for f in w["features"]] for w in printed["versions"]["1"].values())

    out = tmp_path / "report.html"
    assert main(["monitor", "shift", "--state-dir", str(state), "--since", "1d", "--html", str(out)]) == 0
    html = out.read_text()
    assert "<p class='note' id='sensitive'>Not monitored: city, marked sensitive" in html
    table = html[html.index("<table id='drift'>") :]
    assert "city" not in table[: table.index("</table>")]
    charts = re.findall(r'<svg [^>]*aria-label="([^"]+)"', html)
    assert [c.split(":")[0] for c in charts[:-1]] == list(FEATURES)  # no chart for city, the mix last


def test_inputs_marked_sensitive_are_named_while_the_first_rows_are_collected(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Before a reference is built from the log, ``modelapi monitor`` (no model.toml) names the inputs marked
    sensitive from the note the server stored, as it does once the reference exists."""
    state = tmp_path / "state"
    write_log(state, hours=1, per_hour=100, sensitive=("city",))  # 100 rows: fewer than the reference takes
    root = tmp_path / "repo"
    (root / "shift").mkdir(parents=True)
    (root / "shift" / "model.toml").write_text('[monitor]\nsensitive = ["city"]\n')
    server = Monitor.from_settings(Settings(models=[str(root)], state_dir=state))
    try:
        status = server.status("shift")
    finally:
        server.store.close()
    assert status["sensitive"] == ["city"] and status["reference"]["source"].startswith("collecting")

    assert main(["monitor", "shift", "--state-dir", str(state), "--since", "1d"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["reference"]["source"].startswith("collecting")
    assert printed["sensitive"] == ["city"]


def test_the_reference_follows_a_change_of_the_inputs_marked_sensitive(tmp_path: Path) -> None:
    """The reference is rebuilt from its file when the sensitive list changes: an input no longer marked gets its
    summary back, one newly marked loses it (commit 8bfb87d's claim)."""
    state = tmp_path / "state"
    write_log(state)
    root = tmp_path / "repo"
    (root / "shift").mkdir(parents=True)
    rng = np.random.default_rng(5)
    columns = {f: rng.normal(0.0, 1.0, 500) for f in FEATURES}
    pq.write_table(pa.table({**columns, "city": rng.choice(CITIES, 500)}), root / "shift" / "train.parquet")

    def reference(sensitive: str) -> dict[str, object]:
        toml = f'[monitor]\nreference = "train.parquet"\nsensitive = [{sensitive}]\n'
        (root / "shift" / "model.toml").write_text(toml)
        monitor = Monitor.from_settings(Settings(models=[str(root)], state_dir=state))
        try:
            status = monitor.status("shift")
            stored = monitor.store.load_reference("shift")
        finally:
            monitor.store.close()
        assert stored is not None
        noted = stored.get("sensitive", [])
        return {"status": status["sensitive"], "stored": noted, "features": set(stored["features"])}

    assert reference('"city"') == {"status": ["city"], "stored": ["city"], "features": set(FEATURES)}
    assert reference("") == {"status": [], "stored": [], "features": {*FEATURES, "city"}}
    assert reference('"city"') == {"status": ["city"], "stored": ["city"], "features": set(FEATURES)}


def test_an_input_unmarked_sensitive_under_a_log_built_reference_gets_one_from_the_rows_logged_since(
    tmp_path: Path,
) -> None:
    """The first logged rows never held ``city`` (marked sensitive then), and that reference stays: the other
    inputs' baseline must not move. Once ``city`` is no longer marked, the status says its reference is being
    collected from the rows logged since, instead of listing no feature for it and saying nothing; with
    ``reference_rows`` such rows, ``city`` gets its summary and its drift, and the others keep theirs."""
    import time

    state = tmp_path / "state"
    write_log(state, hours=3, now=time.time() - 60, sensitive=("city",))  # 1,200 rows, the last a minute ago
    root = tmp_path / "repo"
    (root / "shift").mkdir(parents=True)
    toml = root / "shift" / "model.toml"

    def monitor(sensitive: str) -> Monitor:
        toml.write_text(f"[monitor]\nlog_predictions = 1.0\nreference_rows = 1000\nsensitive = [{sensitive}]\n")
        return Monitor.from_settings(Settings(models=[str(root)], state_dir=state))

    server = monitor('"city"')
    try:
        status = server.status("shift")
        built = server.store.load_reference("shift")
    finally:
        server.store.close()
    assert status["sensitive"] == ["city"] and status["reference"]["source"] == "the first 1000 logged rows"
    assert built is not None and set(built["features"]) == set(FEATURES)

    server = monitor("")
    try:
        status = server.status("shift")
        collecting = status["reference"]["collecting"]
        assert list(collecting) == ["city"]
        assert collecting["city"].startswith("collecting: 0 of the first 1000 rows logged since ")
        assert collecting["city"].endswith(", when it was no longer marked sensitive")
        assert status["sensitive"] == []
        for window in status["versions"]["1"].values():
            assert sorted(f["feature"] for f in window["features"]) == sorted(FEATURES)
        out = tmp_path / "report.html"
        assert main(["monitor", "shift", "--state-dir", str(state), "--since", "1d", "--html", str(out)]) == 0
        assert "Not monitored yet: city, no reference: collecting: 0 of the first 1000 rows" in out.read_text()

        write_log(state, hours=3, now=time.time() + 3 * 3600 + 60)  # rows with the city, logged after the change
        status = server.status("shift", now=time.time() + 3 * 3600 + 60)
        stored = server.store.load_reference("shift")
    finally:
        server.store.close()
    assert "collecting" not in status["reference"]
    assert stored is not None and "pending" not in stored
    assert set(stored["features"]) == {*FEATURES, "city"} and stored["features"]["city"]["rows"] == 1000
    assert stored["features"]["x1"] == built["features"]["x1"]  # the others' baseline kept
    assert stored["source"] == "the first 1000 logged rows"
    for window in status["versions"]["1"].values():
        assert sorted(f["feature"] for f in window["features"]) == sorted([*FEATURES, "city"])
    city = next(f for f in status["versions"]["1"]["last_rows"]["features"] if f["feature"] == "city")
    assert city["severity"] == "none" and city["missing"] == 0.0


@pytest.mark.parametrize("kind", ["parquet", "postgres"])
def test_an_input_unmarked_sensitive_before_the_log_built_reference_gets_one_from_the_rows_logged_since(
    kind: str, tmp_path: Path
) -> None:
    """``city`` is marked sensitive while the first rows are logged, then unmarked (a hot reload) before there are
    ``reference_rows`` of them. The reference built from the first rows must not summarise ``city`` from rows most
    of which never held it (a missing rate of 0.8, a baseline of 200 rows): as for an input unmarked once the
    reference exists, its summary comes from the rows logged since the change was seen (``collecting`` until
    then), and the other inputs' baseline from the first rows, as before. The change is noted in the store, so
    another worker (or the server restarted) that builds the reference knows it too."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if kind == "postgres" else None
        state = tmp_path / "state"
        root = tmp_path / "repo"
        (root / "shift").mkdir(parents=True)
        toml = root / "shift" / "model.toml"

        def monitor(sensitive: str) -> Monitor:
            toml.write_text(f"[monitor]\nlog_predictions = 1.0\nreference_rows = 1000\nsensitive = [{sensitive}]\n")
            opened = Monitor.from_settings(Settings(models=[str(root)], state_dir=state, database_url=url))
            stack.callback(opened.store.close)
            return opened

        server = monitor('"city"')
        write_log(state, hours=2, now=time.time() - 3600, sensitive=("city",), store=server.store)  # 800 rows
        status = server.status("shift")
        assert status["reference"] == {"source": "collecting: 800 of the first 1000 rows logged", "rows": None}

        toml.write_text("[monitor]\nlog_predictions = 1.0\nreference_rows = 1000\nsensitive = []\n")
        server.policies.refresh("shift")  # what the server does when the model turns READY again (a hot reload)
        seen = time.time()
        status = server.status("shift")
        assert status["reference"]["source"] == "collecting: 800 of the first 1000 rows logged"
        assert status["sensitive"] == []

        later = seen + 3600 + 60
        write_log(state, hours=1, now=later, store=server.store)  # 400 rows with the city, logged after the change
        worker = monitor("")  # another worker, or the server restarted: it never saw the city marked
        status = worker.status("shift", now=later)
        built = worker.store.load_reference("shift")
        assert status["reference"]["source"] == "the first 1000 logged rows"  # 800 without the city, 200 with
        assert built is not None and set(built["features"]) == set(FEATURES)
        collecting = status["reference"]["collecting"]
        assert list(collecting) == ["city"]
        assert collecting["city"].startswith("collecting: 400 of the first 1000 rows logged since ")
        for window in status["versions"]["1"].values():
            assert sorted(f["feature"] for f in window["features"]) == sorted(FEATURES)

        latest = seen + 3 * 3600 + 60
        write_log(state, hours=2, now=latest, store=server.store)  # 800 more: 1,200 since the change
        status = worker.status("shift", now=latest)
        stored = worker.store.load_reference("shift")
    assert "collecting" not in status["reference"]
    assert stored is not None and "pending" not in stored
    assert stored["features"]["city"]["rows"] == 1000 and stored["features"]["city"]["missing"] == 0.0
    assert {f: stored["features"][f] for f in FEATURES} == built["features"]  # the others' baseline kept
    assert stored["source"] == "the first 1000 logged rows" and stored["rows"] == 1000
    city = next(f for f in status["versions"]["1"]["last_rows"]["features"] if f["feature"] == "city")
    assert city["severity"] == "none" and city["missing"] == 0.0


def test_the_writer_notes_an_input_unmarked_sensitive_though_no_status_saw_it_marked(tmp_path: Path) -> None:
    """The server logs its first rows with ``city`` marked sensitive, and ``city`` is unmarked (a hot reload:
    the model turns READY again) before any status was computed: the writer noted what it left out as it logged,
    so the reference built from the first rows still leaves ``city`` to the rows logged after the change."""
    from modelapi.events import Events, ModelStateChanged, PredictionsServed

    root = tmp_path / "repo"
    (root / "shift").mkdir(parents=True)
    toml = root / "shift" / "model.toml"
    toml.write_text('[monitor]\nlog_predictions = 1.0\nreference_rows = 10\nsensitive = ["city"]\n')
    server = Monitor.from_settings(Settings(models=[str(root)], state_dir=tmp_path / "state", log_flush_s=0.05))
    assert server.start(Events()) and server.logger is not None
    logger = server.logger
    now = time.time()

    def log(t: float, city: str) -> None:
        inputs = {"x1": np.array([0.5]), "x2": np.array([0.5]), "x3": np.array([0.5]), "city": np.array([city])}
        logger.predictions_served(PredictionsServed("shift", "1", "records", None, None, t, 0.001, inputs, {}))

    def written(rows: int) -> None:
        deadline = time.monotonic() + 10
        while logger.written["shift"] < rows:
            assert time.monotonic() < deadline, f"{logger.written['shift']} of {rows} rows written"
            time.sleep(0.01)

    try:
        for i in range(6):
            log(now - 3600 + i, "paris")
        written(6)
        toml.write_text("[monitor]\nlog_predictions = 1.0\nreference_rows = 10\nsensitive = []\n")
        logger.model_state_changed(ModelStateChanged("shift", "1", "READY", "LOADING"))
        for i in range(4):
            log(now + 60 + i, "lyon")  # after the change
        written(10)
        status = server.status("shift", now=now + 120)
        stored = server.store.load_reference("shift")
    finally:
        server.stop()
    assert status["reference"]["source"] == "the first 10 logged rows"  # 6 without the city, 4 with
    assert stored is not None and set(stored["features"]) == set(FEATURES)
    assert status["reference"]["collecting"]["city"].startswith("collecting: 4 of the first 10 rows logged since ")


def test_building_one_models_reference_holds_up_no_other_models(tmp_path: Path) -> None:
    """The stored reference is read and written under a lock, the writer thread's notes included (``_left_out``):
    while one model's reference is built (its first rows read: slow, for a large log), another model's status and
    the writer's note of another model's change go on, and that model's own note waits for the build."""
    import threading

    server = Monitor.from_settings(Settings(state_dir=tmp_path / "state"))
    reading, release = threading.Event(), threading.Event()
    first = server.store.first

    def slow_first(model: str, n: int) -> pa.Table:
        if model == "a":
            reading.set()
            assert release.wait(10)
        return first(model, n)

    server.store.first = slow_first  # type: ignore[method-assign]
    building = threading.Thread(target=server.reference, args=("a",))
    building.start()
    try:
        assert reading.wait(10)
        others = threading.Thread(target=lambda: (server._left_out("b"), server.status("b")))
        others.start()
        others.join(5)
        assert not others.is_alive(), "model b waited for model a's reference"
        own = threading.Thread(target=server._left_out, args=("a",))
        own.start()
        own.join(0.2)
        assert own.is_alive(), "model a's note did not wait for its reference being built"
    finally:
        release.set()
        building.join(10)
    own.join(10)
    assert not own.is_alive()
    server.store.close()


def test_a_reference_file_given_to_the_command_is_not_saved_over_the_servers(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``modelapi monitor --reference FILE`` compares against FILE for its own report only: the reference the
    server keeps in the log's store (here built from the first logged rows) stays as it was, so the server's
    drift gauges and ``/monitor`` do not move to a file its operator never configured."""
    state = tmp_path / "state"
    write_log(state)
    server = Monitor.from_settings(Settings(state_dir=state))
    try:
        assert server.status("shift")["reference"]["source"] == "the first 1000 logged rows"
        before = server.store.load_reference("shift")
    finally:
        server.store.close()
    rng = np.random.default_rng(5)
    train = tmp_path / "train.parquet"
    pq.write_table(pa.table({f: rng.normal(0.0, 1.0, 500) for f in FEATURES}), train)

    assert main(["monitor", "shift", "--state-dir", str(state), "--since", "1d", "--reference", str(train)]) == 0
    assert json.loads(capsys.readouterr().out)["reference"] == {"source": "file train.parquet", "rows": 500}

    server = Monitor.from_settings(Settings(state_dir=state))
    try:
        assert server.store.load_reference("shift") == before
        assert server.status("shift")["reference"]["source"] == "the first 1000 logged rows"
    finally:
        server.store.close()
