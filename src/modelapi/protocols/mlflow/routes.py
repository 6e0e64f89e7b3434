"""MLflow's scoring-server routes, so a client written for ``mlflow models serve`` works unchanged.

    POST  /invocations                 the only model served (404 when several are: use the next route)
    POST  /models/{name}/invocations   one model by name
    GET   /ping, /health               200 when every model is ready, else 503

Bodies and answers are in ``codec.py``; JSON or CSV (``text/csv``).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ... import jsonutil, tracing
from ...errors import MalformedRequest, RouteNotFound, UnsupportedMediaType
from ...http.request import is_json_type
from ...http.responses import json_response
from ...http.routing import ProtocolRoute
from ...http.services import Services
from ..base import Protocol
from . import codec


def routes(services: Services) -> list[BaseRoute]:
    dp = services.dataplane

    async def invocations_default(request: Request) -> Response:
        only = dp.repository.only_model
        if only is None:
            names = dp.names(services.context(request, "mlflow"))
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
        ctx = services.context(request, "mlflow")
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        csv, text, body = media == "text/csv", "", None
        if not csv and not is_json_type(content_type):
            # refused on the head, before admission (as V2's and the others' 415): no model looked up, no slot taken
            raise UnsupportedMediaType(
                f"content type '{content_type}' is not supported here; send 'Content-Type: "
                "application/json' (or text/csv with a header row)"
            )
        # admitted on the head (a refusal reads no body); the version is held once the body is in
        with dp.admit(name, ctx) as admission:
            if csv:
                try:
                    text = (await services.body(request)).decode("utf-8")
                except UnicodeDecodeError:
                    raise MalformedRequest("the CSV body is not valid UTF-8") from None
            else:
                body = jsonutil.loads(await services.body(request), ctx.json)
            call = admission.call()
        with call:
            model = call.model
            with tracing.span("decode"):
                if csv:
                    inference = codec.decode_csv(text, model.signature, max_rows=services.max_rows(call))
                else:
                    inference = codec.decode(body, model.signature, max_rows=services.max_rows(call))
            wanted = codec.answer_outputs(model.signature, getattr(model, "invocation_outputs", None))
            inference.outputs = wanted
            answer = await call.infer(inference)
        with tracing.span("encode"):
            view = getattr(model, "invocation_view", None)
            outputs = view(answer.outputs) if callable(view) else answer.outputs
            return json_response(codec.encode(outputs, wanted), version=answer.model_version)

    async def ping(request: Request) -> Response:
        ok = dp.ready
        return json_response({"status": "ok" if ok else "not ready"}, 200 if ok else 503)

    return [
        ProtocolRoute(
            "/invocations", invocations_default, methods=["POST"], name="mlflow_invocations", only_model=True
        ),
        ProtocolRoute("/models/{name}/invocations", invocations, methods=["POST"], name="mlflow_model_invocations"),
        ProtocolRoute("/ping", ping, methods=["GET"], name="mlflow_ping"),
        ProtocolRoute("/health", ping, methods=["GET"], name="mlflow_health"),
    ]


PROTOCOL = Protocol("mlflow", routes)
