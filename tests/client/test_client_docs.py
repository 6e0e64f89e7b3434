"""docs/client.md's Python examples run, in order, in one namespace (as in a notebook), against the real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.clientserver import Served

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
DOC_URL = "http://127.0.0.1:8000"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_examples_run(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    found = blocks()
    assert len(found) >= 8
    monkeypatch.chdir(tmp_path)  # the jobs example writes batch.csv
    monkeypatch.setenv("MODELAPI_API_KEY", served.key)  # as the page says: the key from the environment
    namespace: dict[str, object] = {"__name__": "docs_client"}
    for number, code in enumerate(found):
        try:
            exec(compile(code.replace(DOC_URL, served.url), f"docs/client.md block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/client.md block {number} failed: {exc!r}\n{code}") from exc
    out = capsys.readouterr().out
    assert "'prediction': 'setosa'" in out
    assert "400 Bad Request: record 0: 'sepal_length' expected a number, got string 'long'" in out
    assert "{'prediction': 1.0} [2.0]" in out
    assert "3000 " in out  # the job's rows


def test_the_playgrounds_copy_as_python_snippet_runs(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    """The playground page's "copy as Python" emits exactly this form (with api_key= when the page has a key)."""
    snippet = (
        "from modelapi import Client\n"
        f'client = Client("{served.url}", api_key="{served.key}")\n'
        'print(client.predict("iris", {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
        '"petal_width": 0.2}))\n'
    )
    exec(compile(snippet, "snippet", "exec"), {})
    assert capsys.readouterr().out.startswith("{'prediction': 'setosa', 'probabilities': {'setosa': 0.98")
