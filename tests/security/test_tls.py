"""TLS settings and options in process; the real server over HTTPS is in tests/e2e/test_tls.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpers.tls import make_certs
from modelapi.cli import main
from modelapi.security import tls
from modelapi.settings import Settings


def test_no_tls_by_default() -> None:
    assert tls.uvicorn_options(Settings()) == {}


def test_options_for_uvicorn(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    options = tls.uvicorn_options(Settings(tls_cert=certs.cert, tls_key=certs.key))
    assert options == {"ssl_certfile": str(certs.cert), "ssl_keyfile": str(certs.key)}
    options = tls.uvicorn_options(Settings(tls_cert=certs.cert, tls_key=certs.key, tls_ca=certs.ca_file))
    assert options["ssl_ca_certs"] == str(certs.ca_file)
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = make_certs(tmp_path)
    monkeypatch.setenv("MODELAPI_TLS_CERT", str(certs.cert))
    monkeypatch.setenv("MODELAPI_TLS_KEY", str(certs.key))
    settings = Settings()
    assert (settings.tls_cert, settings.tls_key, settings.tls_ca) == (certs.cert, certs.key, None)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_cert": "c.pem"}, "give both --tls-cert and --tls-key"),
        ({"tls_key": "k.pem"}, "give both --tls-cert and --tls-key"),
        ({"tls_ca": "ca.pem"}, "--tls-ca (client certificates) needs --tls-cert"),
    ],
)
def test_incomplete_settings(given: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**given)


def test_unusable_files_are_named(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    with pytest.raises(ValueError, match=r"tls: cannot use certificate .*server\.pem with key"):
        tls.uvicorn_options(Settings(tls_cert=certs.cert, tls_key=tmp_path / "missing.key"))
    with pytest.raises(ValueError, match="tls: cannot use certificate"):  # a key that is not the certificate's
        tls.uvicorn_options(Settings(tls_cert=certs.cert, tls_key=other.key))
    with pytest.raises(ValueError, match="tls: cannot read the client CA bundle"):
        tls.uvicorn_options(Settings(tls_cert=certs.cert, tls_key=certs.key, tls_ca=tmp_path / "none.pem"))


def test_cli_refuses_before_binding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = make_certs(tmp_path)
    code = main(["serve", "--tls-cert", str(certs.cert), "--tls-key", str(tmp_path / "nope.key"), "--port", "0"])
    assert code == 2
    assert "tls: cannot use certificate" in capsys.readouterr().err
