"""TLS: the server's certificate and key, and optional client-certificate verification (mutual TLS).

``uvicorn_options`` checks the files once, before the server starts, so a wrong path or a key that does not
match the certificate is a clear start-up error rather than a failed handshake per connection. Python's
defaults apply otherwise: TLS 1.2 at least, the platform's secure cipher list. With ``tls_ca`` every client
must present a certificate signed by one of its CAs, or the handshake fails.
"""

from __future__ import annotations

import ssl
from typing import Any

from ..settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: empty without TLS. Raises ``ValueError`` for unusable files."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    context(settings)  # fail now, with a message naming the file
    options: dict[str, Any] = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    if settings.tls_ca is not None:
        options["ssl_ca_certs"] = str(settings.tls_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def context(settings: Settings) -> ssl.SSLContext:
    """The server's SSL context as uvicorn builds it (used to check the files)."""
    assert settings.tls_cert is not None and settings.tls_key is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"tls: cannot use certificate {settings.tls_cert} with key {settings.tls_key}: {exc}"
        ) from None
    if settings.tls_ca is not None:
        try:
            ctx.load_verify_locations(settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls: cannot read the client CA bundle {settings.tls_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
