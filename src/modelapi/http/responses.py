"""JSON answers, written one way for every protocol.

``version``: the model version that produced the answer, sent in the ``Model-Version`` header (V2 answers
carry ``model_version`` in the body instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from .. import jsonutil

#: the header naming the model version that produced an answer
VERSION_HEADER = "model-version"
_JSON = (b"content-type", b"application/json")


class JsonBytes(Response):
    """Encoded JSON with the raw headers ``Response`` would make for it (the given ones, then the length, then the
    type), built directly: ``render`` and ``init_headers`` are general, and every answer paid for them."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        if headers:
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            given = {k for k, _ in raw}
        else:
            raw, given = [], set()
        if b"content-length" not in given and not (status_code < 200 or status_code in (204, 304)):
            raw.append((b"content-length", str(len(body)).encode("latin-1")))
        if b"content-type" not in given:
            raw.append(_JSON)
        self.raw_headers = raw


def json_response(
    obj: Any, status: int = 200, version: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """``obj`` as JSON (bytes are sent as they are: already-encoded JSON)."""
    if version is not None:
        headers = {**headers, VERSION_HEADER: version} if headers else {VERSION_HEADER: version}
    return JsonBytes(obj if isinstance(obj, bytes) else jsonutil.dumps(obj), status, headers)
