"""JSON answers, written one way for every protocol.

``version``: the model version that produced the answer, sent in the ``Model-Version`` header (V2 answers
carry ``model_version`` in the body instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

from .. import jsonutil

#: the header naming the model version that produced an answer
VERSION_HEADER = "model-version"
_VERSION = VERSION_HEADER.encode("latin-1")
_JSON = (b"content-type", b"application/json")
_OCTETS = (b"content-type", b"application/octet-stream")


class JsonBytes(Response):
    """Encoded JSON with the raw headers ``Response`` would make for it (the given ones, then the length, then the
    type), built directly: ``render`` and ``init_headers`` are general, and every answer paid for them.
    ``version``: a ``Model-Version`` header given on its own, without a dict to encode (an answer's one header)."""

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        version: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        sized = not (status_code < 200 or status_code in (204, 304))
        if not headers:  # the common case: nothing given to look through for a length or a type
            raw = [] if version is None else [(_VERSION, version.encode("latin-1"))]
            if sized:
                raw.append((b"content-length", b"%d" % len(body)))
            raw.append(_JSON)
            self.raw_headers = raw
            return
        if version is not None:
            headers = {**headers, VERSION_HEADER: version}
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        given = {k for k, _ in raw}
        if b"content-length" not in given and sized:
            raw.append((b"content-length", b"%d" % len(body)))
        if b"content-type" not in given:
            raw.append(_JSON)
        self.raw_headers = raw


class OctetBytes(Response):
    """Bytes sent as ``application/octet-stream`` (a V2 binary answer), status 200, with the raw headers
    ``Response(body, media_type="application/octet-stream", headers=...)`` makes: the given ones (lower-case
    names, neither a length nor a type among them), the length, the type; built directly, as ``JsonBytes`` is."""

    media_type = "application/octet-stream"

    def __init__(self, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [*headers, (b"content-length", b"%d" % len(body)), _OCTETS]


def json_response(
    obj: Any, status: int = 200, version: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """``obj`` as JSON (bytes are sent as they are: already-encoded JSON)."""
    return JsonBytes(obj if isinstance(obj, bytes) else jsonutil.dumps(obj), status, headers, version)
