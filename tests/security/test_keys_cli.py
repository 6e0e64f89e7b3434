"""``modelapi keys create | list | revoke`` as an operator types them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from modelapi.cli import main
from modelapi.security.keys import KEY_PATTERN, KeyStore


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--state-dir", str(tmp_path)]
    code, out, err = run(capsys, "keys", "create", "--name", "ci-bot", *d)
    assert code == 0 and KEY_PATTERN.match(out.strip()) and "shown only now" in err
    key = out.strip()
    key_id = key.split("_")[1]
    code, out, _ = run(capsys, "keys", "create", "--name", "dash", "--scope", "admin", "--models", "iris, digits",
                       "--expires", "30d", "--json", *d)  # fmt: skip
    info = json.loads(out)
    assert code == 0 and info["scopes"] == ["admin"] and info["models"] == ["digits", "iris"]
    assert info["state"] == "active" and info["expires"] > info["created"]
    code, out, _ = run(capsys, "keys", "list", *d)
    assert code == 0 and f"mk_{key_id}  active   predict  models=*  expires=never  ci-bot" in out
    assert key.split("_")[2] not in out and info["key"].split("_")[2] not in out  # never a secret
    code, out, _ = run(capsys, "keys", "revoke", f"mk_{key_id}", *d)
    assert code == 0 and out == f"revoked mk_{key_id} (ci-bot)\n"
    code, out, _ = run(capsys, "keys", "list", "--json", *d)
    states = {json.loads(line)["name"]: json.loads(line)["state"] for line in out.splitlines()}
    assert states == {"ci-bot": "revoked", "dash": "active"}


def test_state_dir_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELAPI_STATE_DIR", str(tmp_path / "env"))
    code, out, _ = run(capsys, "keys", "create", "--name", "x")
    assert code == 0
    store = KeyStore.open(tmp_path / "env", None)
    assert store.authenticate(out.strip()).name == "x"
    store.close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["create", "--name", "x", "--expires", "tomorrow"], "--expires 'tomorrow'"),
        (["create", "--name", "x", "--models", " , "], "--models"),
        (["create", "--name", " "], "--name"),
        (["revoke", "mk_12345678"], "no key with id mk_12345678"),
        (["create", "--name", "x", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "key store"),
    ],
)
def test_mistakes_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    code, out, err = run(capsys, "keys", *args, "--state-dir", str(tmp_path))
    assert code == 2 and out == "" and words in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_an_expired_key_is_listed_as_expired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = KeyStore.open(tmp_path, None)
    store.create("old", expires_at=time.time() - 5)
    store.close()
    _, out, _ = run(capsys, "keys", "list", "--state-dir", str(tmp_path))
    assert " expired " in out
