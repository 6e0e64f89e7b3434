from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from modelapi.cli import _settings, build_parser, main


def test_inspect_prints_the_signature_without_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "toymodels:IrisClassifier", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["platform"] == "python"
    assert [i["name"] for i in described["inputs"]][:2] == ["sepal_length", "sepal_width"]


def test_bad_setting_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelapi: error: port")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        # a check across settings names no setting, and pydantic's "Value error, " does not lead the message
        (["--tls-cert", "cert.pem"], "modelapi: error: tls: give both --tls-cert and --tls-key (PEM files)"),
        (["--host", "0.0.0.0", "--auth", "off"], "modelapi: error: auth: turning authentication off on '0.0.0.0'"),
        (["--batch", "iris=zz"], "modelapi: error: batch: batching 'zz': expected off, on, MAX_ROWS or MAX_ROWS,"),
        (
            ["--access-log-refusals-per-s", "-1"],
            "modelapi: error: access_log_refusals_per_s: '-1': expected a whole number of lines a second (0: none), "
            "or 'unbounded'",
        ),
    ],
)
def test_a_settings_check_of_ours_is_its_own_message(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert "Value error" not in err
    assert err.count("\n") == 1


def test_a_reader_that_goes_away_ends_the_command_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`modelapi keys list | head -1`: the pipe's reader closes it; no 'modelapi: error: [Errno 32] Broken pipe'."""
    from helpers.keys import create_key

    for n in range(3):
        create_key(tmp_path, f"key{n}")
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = open(write_end, "w", buffering=1)  # noqa: SIM115 (closed below; main swaps its descriptor)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["keys", "list", "--state-dir", str(tmp_path)]) == 128 + signal.SIGPIPE
        stdout.write("more\n")  # what is written afterwards goes nowhere, without an error
        stdout.flush()
    finally:
        stdout.close()
    assert capsys.readouterr().err == ""


def test_unknown_model_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "no_such_module_xyz:Model"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_more_names_than_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "toymodels:Regressor", "--name", "a", "--name", "b"]) == 2
    assert "names" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--model-name", "--model_name"])  # the second as KServe's servers spell it
def test_model_name_names_a_single_model(flag: str) -> None:
    from modelapi.cli import _settings, build_parser

    args = build_parser().parse_args(["serve", "/mnt/models", flag, "iris"])
    settings = _settings(args, list(args.models))
    assert (settings.models, settings.model_name) == (["/mnt/models"], "iris")


def test_the_command_line_loads_no_pyarrow_until_a_command_needs_it() -> None:
    """``modelapi --help`` and ``keys`` start fast: the prediction log's libraries load with the server."""
    import subprocess
    import sys

    code = "import sys, modelapi.cli; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_worker_takes_its_metrics_port_from_its_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started with a server's environment (MODELAPI_METRICS_PORT set) does not try to take the server's
    operations port: its own is MODELAPI_WORKER_METRICS_PORT, or its --metrics-port."""
    import modelapi.worker

    seen: list[tuple[int | None, int | None]] = []
    monkeypatch.setattr(
        modelapi.worker,
        "run_worker",
        lambda settings, burst=False: seen.append((settings.metrics_port, settings.worker_metrics_port)),
    )
    monkeypatch.setenv("MODELAPI_METRICS_PORT", "9090")
    monkeypatch.setenv("MODELAPI_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert main(["worker"]) == 0
    assert main(["worker", "--metrics-port", "9101"]) == 0
    monkeypatch.setenv("MODELAPI_WORKER_METRICS_PORT", "9102")
    assert main(["worker"]) == 0
    assert seen == [(9090, None), (9090, 9101), (9090, 9102)]


@pytest.mark.parametrize(("value", "per_s"), [("0", 0), ("250", 250), ("unbounded", None)])
def test_the_access_log_refusals_per_s_flag_sets_the_bound(value: str, per_s: int | None) -> None:
    parsed = _settings(build_parser().parse_args(["serve", "--access-log-refusals-per-s", value]), [])
    assert parsed.access_log_refusals_per_s == per_s
    assert _settings(build_parser().parse_args(["serve"]), []).access_log_refusals_per_s == 100
