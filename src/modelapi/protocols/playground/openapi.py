"""The playground's entry in the OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...http import openapi_schemas as s

if TYPE_CHECKING:
    from ...http.openapi import Builder, Op
    from ...models.base import Model


def describe_page(b: Builder, model: Model | None) -> dict[str, Op]:
    return {
        "get": {
            "summary": "Try the model in a browser: a form, a CSV batch, copy-as snippets (docs/playground.md)",
            "responses": s.ok({"type": "string"}, "an HTML page", "text/html"),
        }
    }
