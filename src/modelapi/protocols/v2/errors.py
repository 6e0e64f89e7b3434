"""The Open Inference Protocol's error style: ``{"error": "..."}``, as the protocol (and tritonclient) expect."""

from __future__ import annotations

from typing import Any

from ..base import ErrorStyle


def _body(status: int, title: str, detail: str, instance: str, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": detail}
    if request_id:
        body["request_id"] = request_id
    return body


V2_ERRORS = ErrorStyle("v2", "application/json", "V2Error", _body)
