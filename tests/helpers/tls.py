"""Certificates made in the test with trustme: a CA, a server certificate for 127.0.0.1, client certificates."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    ca: trustme.CA
    cert: Path
    key: Path
    ca_file: Path

    def client_context(self, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA, presenting ``client``'s certificate when given."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if client is not None:
            client.configure_cert(ctx)
        return ctx


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    for blob, path in ((leaf.cert_chain_pems[0], cert), (leaf.private_key_pem, key), (ca.cert_pem, ca_file)):
        blob.write_to_path(str(path))
    return Certs(ca, cert, key, ca_file)
