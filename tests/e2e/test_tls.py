"""The real server over HTTPS on loopback, with a certificate made in the test: HSTS, and client certificates
(mutual TLS) accepted when signed by the configured CA, refused when missing or signed by another CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trustme

from helpers.tls import make_certs

from .server import serve

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_https_with_hsts(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    ctx = certs.client_context()
    args = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    with serve(*args, tmp_dir=tmp_path, tls=ctx, timeout=120) as server:
        assert server.url.startswith("https://")
        with httpx.Client(base_url=server.url, verify=ctx) as client:
            r = client.post("/predict", json=ROW)
            assert r.status_code == 200, r.text
            assert r.json()["prediction"] == "setosa"
            assert r.headers["strict-transport-security"] == "max-age=31536000"
            assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
            httpx.get(server.url + "/models")
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP on the TLS port gets nothing
            httpx.get(server.url.replace("https://", "http://") + "/models")
    assert "https://127.0.0.1" in server.log()  # the banner shows the https URL


def test_client_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    good = certs.ca.issue_cert("client@example.com")
    stranger = trustme.CA().issue_cert("client@example.com")
    args = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key), "--tls-ca", str(certs.ca_file))
    with serve(*args, tmp_dir=tmp_path, tls=certs.client_context(good), timeout=120) as server:
        r = httpx.get(server.url + "/models", verify=certs.client_context(good))
        assert r.status_code == 200, r.text
        for refused in (certs.client_context(), certs.client_context(stranger)):
            # TLS 1.3 reports the refusal after the handshake: on the first read, as a reset or an alert
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(server.url + "/models", verify=refused)
        assert httpx.get(server.url + "/models", verify=certs.client_context(good)).status_code == 200


def test_serve_refuses_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    (tmp_path / "b").mkdir()
    other = make_certs(tmp_path / "b")
    with (
        pytest.raises(RuntimeError, match="tls: cannot use certificate"),
        serve(
            "--tls-cert",
            str(certs.cert),
            "--tls-key",
            str(other.key),
            tmp_dir=tmp_path,
            tls=ssl.create_default_context(),
        ),
    ):
        pass
