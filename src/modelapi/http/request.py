"""Reading request bodies: content type, size (enforced by the middleware) and JSON parsing."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .. import jsonutil
from ..errors import UnsupportedMediaType


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not is_json_type(content_type):
        raise UnsupportedMediaType(
            f"content type '{content_type}' is not supported here; send 'Content-Type: application/json'"
        )


async def read_json(request: Request) -> Any:
    require_json(request)
    return jsonutil.loads(await request.body())


def json_response_body(obj: Any) -> bytes:
    return jsonutil.dumps(obj)
