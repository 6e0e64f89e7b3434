"""json_response: the same status, body and raw headers as Starlette's Response makes for them."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from modelapi.http.responses import OctetBytes, json_response


@pytest.mark.parametrize(
    ("obj", "status", "version", "headers"),
    [
        ({"a": 1}, 200, None, None),
        (b'{"b": 2}', 200, "3", None),
        ({"error": "x"}, 503, None, {"Retry-After": "1"}),
        ({"c": [1.5]}, 201, "v2", {"Location": "/jobs/1", "content-type": "application/problem+json"}),
        (b"", 204, None, None),
        (b"", 304, "7", None),
        ({"d": 1}, 200, "1", {}),
        ({"e": 1}, 200, "1", {"Model-Version": "0", "Content-Length": "9"}),
    ],
)
def test_json_answers_carry_what_starlette_would_give_them(
    obj: object, status: int, version: str | None, headers: dict[str, str] | None
) -> None:
    ours = json_response(obj, status, version, headers)
    given = {**(headers or {}), **({"model-version": version} if version else {})} or None
    body = ours.body
    theirs = Response(body, status_code=status, media_type="application/json", headers=given)
    assert (ours.status_code, ours.body, ours.raw_headers) == (theirs.status_code, theirs.body, theirs.raw_headers)
    assert ours.media_type == "application/json" and ours.background is None


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"\x00\x01binary", ()),
        (b'{"outputs": []}\x00' * 40, ((b"inference-header-content-length", b"15"),)),
        (b"", ((b"x-a", b"1"), (b"x-b", b"2"))),
    ],
)
def test_octet_answers_carry_what_starlette_would_give_them(body: bytes, headers: tuple[tuple[bytes, bytes]]) -> None:
    ours = OctetBytes(body, headers)
    given = {k.decode(): v.decode() for k, v in headers} or None
    theirs = Response(body, media_type="application/octet-stream", headers=given)
    assert (ours.status_code, ours.body, ours.raw_headers) == (theirs.status_code, theirs.body, theirs.raw_headers)
    assert ours.media_type == "application/octet-stream" and ours.background is None
