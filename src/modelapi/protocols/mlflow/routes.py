"""MLflow's scoring-server routes, so a client written for ``mlflow models serve`` works unchanged.

    POST  /invocations                 the only model served (404 when several are: use the next route)
    POST  /models/{name}/invocations   one model by name
    GET   /ping, /health               200 when every model is ready, else 503

Bodies and answers are in ``codecs/mlflow.py``; JSON or CSV (``text/csv``).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import jsonutil
from ..codecs import mlflow
from ..dataplane import DataPlane
from ..errors import MalformedRequest, RouteNotFound, UnsupportedMediaType
from .request import call_context, is_json_type, read_body


def _dataplane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


def _json(obj: object, status: int = 200, version: str | None = None) -> Response:
    headers = None if version is None else {"model-version": version}
    return Response(jsonutil.dumps(obj), status_code=status, media_type="application/json", headers=headers)


async def invocations_default(request: Request) -> Response:
    dp = _dataplane(request)
    only = dp.repository.only_model
    if only is None:
        names = dp.names(call_context(request, "mlflow"))
        example = f", e.g. /models/{quote(names[0], safe='')}/invocations" if names else ""
        raise RouteNotFound(
            f"/invocations needs exactly one served model, and this server serves {len(names)}: "
            f"{', '.join(names)}; use /models/{{name}}/invocations{example}"
        )
    return await _invoke(request, only)


async def invocations(request: Request) -> Response:
    return await _invoke(request, request.path_params["name"])


async def _invoke(request: Request, name: str) -> Response:
    """MLflow's scoring protocol has no versions: the default version answers (named in ``Model-Version``)."""
    dp = _dataplane(request)
    with dp.call(name, call_context(request, "mlflow")) as call:
        model = call.model
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "text/csv":
            try:
                text = (await read_body(request)).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedRequest("the CSV body is not valid UTF-8") from None
            inference = mlflow.decode_csv(text, model.signature, max_rows=dp.max_rows)
        elif is_json_type(content_type):
            body = jsonutil.loads(await read_body(request))
            inference = mlflow.decode(body, model.signature, max_rows=dp.max_rows)
        else:
            raise UnsupportedMediaType(
                f"content type '{content_type}' is not supported here; send 'Content-Type: application/json' "
                "(or text/csv with a header row)"
            )
        wanted = mlflow.answer_outputs(model.signature, getattr(model, "invocation_outputs", None))
        inference.outputs = wanted
        answer = await call.infer(inference)
    view = getattr(model, "invocation_view", None)
    outputs = view(answer.outputs) if callable(view) else answer.outputs
    return _json(mlflow.encode(outputs, wanted), version=answer.model_version)


async def ping(request: Request) -> Response:
    dp = _dataplane(request)
    ok = dp.ready
    return _json({"status": "ok" if ok else "not ready"}, 200 if ok else 503)


def routes() -> list[BaseRoute]:
    return [
        Route("/invocations", invocations_default, methods=["POST"], name="mlflow_invocations"),
        Route("/models/{name}/invocations", invocations, methods=["POST"], name="mlflow_model_invocations"),
        Route("/ping", ping, methods=["GET"], name="mlflow_ping"),
        Route("/health", ping, methods=["GET"], name="mlflow_health"),
    ]
