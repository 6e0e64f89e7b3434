"""``modelapi predict --model M --url URL NAME=VALUE ...``: one record in the terminal, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.clientserver import Served
from modelapi.cli import main
from modelapi.client.command import parse_fields, render

RECORD = ["sepal_length=5.1", "sepal_width=3.5", "petal_length=1.4", "petal_width=0.2"]


def modelapi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "modelapi", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_one_record_is_answered_for_a_person(served: Served) -> None:
    done = modelapi("predict", "--model", "iris", "--url", served.url, "--api-key", served.key, *RECORD)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "prediction: setosa" and lines[1] == "probabilities:"
    assert lines[2].split()[:2] == ["setosa", "0.985"] and lines[2].endswith("#" * 30)
    assert [line.split()[0] for line in lines[3:]] == ["versicolor", "virginica"]


def test_json_and_the_key_from_the_environment(served: Served) -> None:
    done = modelapi(
        "predict", "--model", "iris", "--url", served.url, "--json", *RECORD, env={"MODELAPI_API_KEY": served.key}
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["prediction"] == "setosa" and set(answer["probabilities"]) == {"setosa", "versicolor", "virginica"}


def test_a_refused_value_shows_the_servers_message(served: Served) -> None:
    bad = ["sepal_length=abc", *RECORD[1:]]
    done = modelapi("predict", "--model", "iris", "--url", served.url, "--api-key", served.key, *bad)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(
        "modelapi: error: record 0: 'sepal_length' expected a number, got string 'abc' (HTTP 400, request id "
    )
    done = modelapi("predict", "--model", "iris", "--url", served.url, *RECORD, env={"MODELAPI_API_KEY": ""})
    assert done.returncode == 1 and "this server needs an API key" in done.stderr and "(HTTP 401" in done.stderr
    done = modelapi("predict", "--model", "iris", "--url", served.url, "--api-key", served.key, *RECORD[:3])
    assert done.returncode == 1 and "missing 'petal_width'" in done.stderr


def test_in_process_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    record = ["sepal_length=6.3", "sepal_width=3.3", "petal_length=6", "petal_width=2.5"]
    assert main(["predict", "--model", "iris", "--json", *record]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == "virginica"


def test_in_process_the_model_may_come_first_and_the_servers_database_is_left_alone(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a deployment's environment: its database (nothing listens on port 1) is not this command's to open
    monkeypatch.setenv("MODELAPI_DATABASE_URL", "postgresql://user:pw@127.0.0.1:1/none")
    assert main(["predict", "toymodels:HalfPlusThree", "--model", "half_plus_three", "--json", "x=1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"prediction": 3.5}
    with pytest.raises(SystemExit):  # what is neither a model nor a field is still argparse's error
        main(["predict", "toymodels:HalfPlusThree", "--model", "half_plus_three", "x=1", "--json", "other"])
    assert "unrecognized arguments: x=1 other" in capsys.readouterr().err


def test_fields_and_files_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "iris", "--input", "in.csv", *RECORD]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["predict", "--model", "iris", "--input", "in.csv"]) == 2
    assert "--input and --output go together" in capsys.readouterr().err
    assert main(["predict", "--model", "iris", "--url", "http://127.0.0.1:9", "a=1", "a=2"]) == 2
    assert "field 'a' given twice" in capsys.readouterr().err


def test_values_are_parsed_by_the_signature() -> None:
    inputs = [
        {"name": "n", "datatype": "INT32", "shape": [-1]},
        {"name": "x", "datatype": "FP32", "shape": [-1]},
        {"name": "ok", "datatype": "BOOL", "shape": [-1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1]},
        {"name": "m", "datatype": "FP32", "shape": [-1, 2]},
    ]
    fields = {"n": "3", "x": "2.5", "ok": "True", "city": "42", "m": "[1, 2.5]", "other": "7"}
    assert parse_fields(fields, inputs) == {"n": 3, "x": 2.5, "ok": True, "city": "42", "m": [1, 2.5], "other": "7"}
    assert parse_fields({"x": "abc", "m": "[1,"}, inputs) == {"x": "abc", "m": "[1,"}  # the server names these


def test_render() -> None:
    text = render({"prediction": 2.5, "probabilities": {"a": 0.5, "bb": None}, "tags": ["x"]})
    bar = "#" * 15
    expected = ["prediction: 2.5", "probabilities:", f"  a    0.500  {bar}", "  bb    null", 'tags: ["x"]']
    assert text.splitlines() == expected
