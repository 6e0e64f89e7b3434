"""The one place the client reads the environment: ``MODELAPI_API_KEY``, the key sent when none is given.

The server's ``Settings`` (pydantic-settings) stays the only reader of the environment for the server. The
client does not use it: building ``Settings`` validates every server setting in the environment (a
``MODELAPI_PORT`` that is wrong for the server would break a notebook that only calls it) and imports the
server's configuration machinery, while a client needs exactly one value. ``modelapi predict`` reads the same
variable through ``Settings.api_key`` and passes it on explicitly.
"""

from __future__ import annotations

import os

API_KEY_VARIABLE = "MODELAPI_API_KEY"


def api_key_from_environment() -> str | None:
    """``MODELAPI_API_KEY``, or ``None`` when it is unset or empty."""
    return os.environ.get(API_KEY_VARIABLE) or None
