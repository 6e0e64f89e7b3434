"""Fast JSON with numpy support (orjson).

NaN and Infinity have no JSON form: they are written as ``null``, deliberately, so every answer is valid JSON
that any language can read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from .context import JsonLimits
from .errors import MalformedRequest
from .security import json_limits

_OPTS = orjson.OPT_SERIALIZE_NUMPY
#: keys that are not strings (an int label, say) are written as strings; the option costs a third more on a
#: document of many small objects (a friendly answer), so it is only asked for when a document needs it
_NON_STR_OPTS = _OPTS | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=_default, option=_OPTS)
    except orjson.JSONEncodeError:  # a key that is not a string, or a value nothing encodes: the full options
        return orjson.dumps(obj, default=_default, option=_NON_STR_OPTS)


def loads(body: bytes | str, limits: JsonLimits | None = None) -> Any:
    """Parse a request body; any failure (bad UTF-8, bad syntax, nesting over 1024) is a client error.

    With ``limits`` (a client's body: the call's ``CallContext.json``), the body's nesting depth and element
    count are checked first (``security/json_limits.py``); without, only orjson's own ceiling applies (the
    caller trusts the document). The limits are an argument, not ambient state, so a front end that forgets
    them is visible in its code."""
    if not body:
        raise MalformedRequest("the request body is empty; send a JSON document")
    if limits is not None:
        raw = body.encode() if isinstance(body, str) else body
        json_limits.check(raw, max_depth=limits.max_depth, max_elements=limits.max_elements)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from None
