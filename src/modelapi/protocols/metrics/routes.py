"""``GET /metrics`` on the main port: every worker's totals in Prometheus' text format, admin keys only when
authentication is on (``admin_paths``). With ``--metrics-port`` it is not served here but on that port, the
operations port (``http/ops.py``), without a key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import metrics
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol

if TYPE_CHECKING:
    from ...http.openapi import Builder
    from ...models.base import Model

PATH = "/metrics"


async def scrape() -> tuple[bytes, str]:
    """This worker's tallies and samples brought up to date, then every worker's values, aggregated."""
    await metrics.refresh_async()
    return metrics.render()


def routes(services: Services) -> list[BaseRoute]:
    if services.settings.metrics_port is not None:
        return []

    async def endpoint(request: Request) -> Response:
        body, content_type = await scrape()
        return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})

    return [ProtocolRoute(PATH, endpoint, methods=["GET"])]


def describe(b: Builder, model: Model | None) -> dict[str, dict[str, Any]]:
    return {
        "get": {
            "summary": "Prometheus metrics: the totals of every worker (admin keys only when authentication is on)",
            "responses": {
                "200": {
                    "description": "Prometheus' text exposition format 0.0.4 (docs/observability.md)",
                    "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}},
                }
            },
        }
    }


PROTOCOL = Protocol("metrics", routes, prefixes=(PATH,), global_ops={PATH: describe}, admin_paths=(PATH,))
