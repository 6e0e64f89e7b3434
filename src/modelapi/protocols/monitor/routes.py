"""``GET /models/{name}/monitor``: drift per version and window, as ``Monitor.status`` computes it from the whole
prediction log (docs/monitoring.md), so whichever worker answers shows every worker's rows. The model-access
guard applies as on every route naming a model: an admin key, or a key allowed this model. Answers are kept
for ``CACHE_S`` per model: the log is read from disk (or the database) each time one is computed."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ...http.responses import json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ...security.principal import current_principal
from ..base import Protocol

if TYPE_CHECKING:
    from ...http.openapi import Builder
    from ...models.base import Model

PATH = "/models/{name}/monitor"
CACHE_S = 5.0


def routes(services: Services) -> list[BaseRoute]:
    monitor = services.monitor
    if monitor is None:
        return []
    cache: dict[str, tuple[float, Any]] = {}

    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        services.repository.entry(name, current_principal(request))  # 404 for a model unknown (or not the key's)
        hit = cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return json_response(hit[1])
        status = await asyncio.to_thread(monitor.status, name)
        cache[name] = (time.monotonic(), status)
        return json_response(status)

    return [ProtocolRoute(PATH, endpoint, methods=["GET"])]


def describe(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    return {
        "get": {
            "summary": "Drift of a model's logged inputs and predictions against its reference (docs/monitoring.md)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "per version: windows last_rows, last_hour, last_day, each with its rows, the "
                    "features sorted by severity (PSI, test, p-value, missing rate), the prediction mix's shift and "
                    "the share of requests rejected",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }


PROTOCOL = Protocol("monitor", routes, global_ops={PATH: describe})
