"""The V2 repository extension (Triton's model repository API), served only with ``--enable-management``.

POST  /v2/repository/index                  every model version with its state and reason
POST  /v2/repository/models/{name}/load     load the model from the repository (every worker follows)
POST  /v2/repository/models/{name}/unload   stop serving it (in-flight calls finish)

Bodies and answers are Triton's, so ``tritonclient``'s repository calls work unchanged. Models come from the
repository directory only: parameters that would upload content or name a path (``file:``, ``config``) are
refused with 400. The admin scope these routes need is checked by ``security/auth.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import jsonutil
from ...context import JsonLimits
from ...errors import MalformedRequest
from ...http.responses import json_response
from ...http.services import Services


def routes(services: Services, route: Callable[..., BaseRoute]) -> list[BaseRoute]:
    dp = services.dataplane
    limits = services.json_limits

    async def repository_index(request: Request) -> Response:
        """``{"ready": true}`` in the body lists only the ready versions."""
        body = await services.body(request)
        ready_only = False
        if body.strip():
            doc = jsonutil.loads(body, limits)
            if not isinstance(doc, dict):
                raise MalformedRequest('the request body must be a JSON object, e.g. {"ready": true}')
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise MalformedRequest(f"ready: must be a boolean (true or false), got {_kind(ready)}")
            ready_only = ready
        visible = set(dp.names(services.context(request, "v2")))
        rows = [r for r in dp.repository.index() if r["name"] in visible and (not ready_only or r["state"] == "READY")]
        return json_response(rows)

    async def repository_load(request: Request) -> Response:
        """Load the model from the repository, or load it again; 400 with the reason when no version loads."""
        name = request.path_params["name"]
        _parameters(await services.body(request), limits, allowed=())
        await dp.repository.load_model(name)
        return Response(status_code=200)

    async def repository_unload(request: Request) -> Response:
        name = request.path_params["name"]
        _parameters(await services.body(request), limits, allowed=("unload_dependents",))
        await dp.repository.unload_model(name)
        return Response(status_code=200)

    post = ["POST"]
    return [
        route("/v2/repository/index", repository_index, post),
        route("/v2/repository/models/{name}/load", repository_load, post),
        route("/v2/repository/models/{name}/unload", repository_unload, post),
    ]


def _parameters(body: bytes, limits: JsonLimits, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's ``parameters``; a parameter that would make the server read a path it names (Triton's
    ``file:`` and ``config`` overrides) is refused: models come from the repository only."""
    if not body.strip():
        return {}
    doc = jsonutil.loads(body, limits)
    if not isinstance(doc, dict):
        raise MalformedRequest('the request body must be a JSON object, e.g. {"parameters": {}}')
    params = doc.get("parameters")
    if params is None:  # absent or null: no parameters
        return {}
    if not isinstance(params, dict):
        raise MalformedRequest(f"parameters: must be a JSON object, got {_kind(params)}")
    check_parameter_names(params, allowed)
    if "unload_dependents" in params and not isinstance(params["unload_dependents"], bool):
        got = _kind(params["unload_dependents"])
        raise MalformedRequest(f"parameters.unload_dependents: must be a boolean (true or false), got {got}")
    return params


def check_parameter_names(names: Iterable[str], allowed: tuple[str, ...]) -> None:
    """Refuse a parameter outside ``allowed``; one that would make the server read content or a path it names
    (Triton's ``file:`` and ``config``) with why: models come from the repository only. HTTP and gRPC alike."""
    for key in names:
        if key not in allowed:
            why = (
                "models load from the repository only; put the files in the repository and load by name"
                if key.startswith("file:") or key == "config"
                else f"supported: {', '.join(allowed) or 'none'}"
            )
            raise MalformedRequest(f"parameters.{key}: not supported; {why}")


def _kind(value: object) -> str:
    """A JSON value's type, as an error message names it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"
