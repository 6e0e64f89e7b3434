"""tritonclient's HTTP client, closed once and for all.

Its ``__del__`` calls ``close()`` again, which joins a gevent pool: run by the garbage collector in another thread
than the one that made the client (a server's thread in a later test, say), that raises gevent's
``InvalidThreadUseError``, and pytest fails whichever test was running then with it. A client closed here is not
closed again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tritonclient.http as httpclient


@contextmanager
def triton_http(url: str) -> Iterator[httpclient.InferenceServerClient]:
    """A client of ``url`` (``host:port``), closed on the way out; its ``__del__`` then does nothing."""
    client = httpclient.InferenceServerClient(url)
    try:
        yield client
    finally:
        client.close()
        client.close = lambda: None  # type: ignore[method-assign]  # what __del__ calls
