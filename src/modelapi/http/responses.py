"""JSON answers, written one way for every protocol.

``version``: the model version that produced the answer, sent in the ``Model-Version`` header (V2 answers
carry ``model_version`` in the body instead).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .. import jsonutil

#: the header naming the model version that produced an answer
VERSION_HEADER = "model-version"


def json_response(
    obj: Any, status: int = 200, version: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """``obj`` as JSON (bytes are sent as they are: already-encoded JSON)."""
    if version is not None:
        headers = {**(headers or {}), VERSION_HEADER: version}
    body = obj if isinstance(obj, bytes) else jsonutil.dumps(obj)
    return Response(body, status_code=status, media_type="application/json", headers=headers)
