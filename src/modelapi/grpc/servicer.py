"""``inference.GRPCInferenceService``: each RPC over the same services the HTTP routes use.

Every RPC authenticates (but ``ServerLive`` and ``ServerReady``), builds the ``CallContext`` (protocol
``grpc``, the key's principal, the call's gRPC deadline as its deadline) and does what the matching V2 route
does: ``ModelInfer`` is ``dataplane.call`` -> ``codec.decode`` -> ``call.infer`` -> ``codec.encode``. Errors
are raised as ``ModelAPIError`` and turned into a status once, in ``_rpc`` (``errors.py``), which also writes the
access log line. Until the models have loaded (and after a failed start) every RPC but the health ones is
``UNAVAILABLE``, as every HTTP route but the probes answers 503.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from .. import logs, tracing
from ..context import CallContext
from ..errors import MalformedRequest, ModelNotFound, ModelNotReady
from ..http.services import Services
from ..protocols.v2 import codec as v2_codec
from ..protocols.v2 import stats
from ..protocols.v2.repository import check_parameter_names
from . import codec, proto
from .auth import Authenticator
from .errors import STATUSES, status_of

log = logging.getLogger("modelapi")
ACCESS_LOG = logging.getLogger("modelapi.access")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_IDS = random.Random()  # noqa: S311  request ids for logs, not secrets (as http/middleware.py)
_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass
class Frontend:
    """What the servicer asks of the server it runs in.

    ``services``: the app's services once it is built (``None`` while starting); ``ready``: the server's own
    readiness (serving, every worker up, not draining); ``failed``: the server could not start.
    """

    services: Callable[[], Services | None]
    ready: Callable[[], bool]
    failed: Callable[[], bool] = lambda: False


class Servicer:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self._auth: tuple[Services, Authenticator] | None = None
        self._server_metadata = proto.ServerMetadataResponse(**v2_codec.server_metadata())

    # plumbing ---------------------------------------------------------------------------------------------
    def handlers(self, management: bool) -> grpc.GenericRpcHandler:
        """The service's method handlers; the repository RPCs only with ``management`` (else UNIMPLEMENTED)."""
        methods: dict[str, grpc.RpcMethodHandler] = {}
        for name, (request, response) in proto.METHODS.items():
            if name.startswith("Repository") and not management:
                continue
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._rpc(name, getattr(self, name)),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(proto.SERVICE, methods)

    def _rpc(self, name: str, method: Handler) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            begun = time.perf_counter()
            code = grpc.StatusCode.OK
            span = _server_span(name, context) if tracing.ON else contextlib.nullcontext()
            with span as current:
                try:
                    return await method(request, context)
                except Exception as exc:
                    code, message, trailers = status_of(exc)
                    if current is not None:
                        current.set_attribute("rpc.grpc.status_code", code.value[0])
                    if trailers:
                        context.set_trailing_metadata(trailers)
                    await context.abort(code, message)
                finally:
                    if ACCESS_LOG.isEnabledFor(logging.INFO):
                        _access(name, context, code, time.perf_counter() - begun)

        return handler

    def _services(self) -> Services:
        services = self.frontend.services()
        if services is None:
            failed = self.frontend.failed()
            raise ModelNotReady(
                "the server failed to start" if failed else "the server is starting: models are loading",
                headers={"retry-after": "1"},
            )
        return services

    def _authenticator(self, services: Services) -> Authenticator:
        cached = self._auth
        if cached is None or cached[0] is not services:
            assert services.auth is not None
            authenticator = Authenticator(services.auth, services.limits, services.dataplane.events)
            cached = self._auth = (services, authenticator)
        return cached[1]

    async def _context(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        *,
        admin: bool = False,
        model: str | None = None,
        version: str | None = None,
    ) -> tuple[Services, CallContext]:
        """Who calls and what the data plane needs to know; the call's request id, model and version go on
        its log records (``logs.CONTEXT``; each RPC runs in a task of its own, so nothing needs resetting)."""
        services = self._services()
        metadata = context.invocation_metadata() or ()
        principal = await self._authenticator(services).principal(metadata, method, admin=admin)
        rid = next((v for k, v in metadata if k == "x-request-id" and isinstance(v, str)), None)
        if rid is None or not _CLIENT_ID.fullmatch(rid):
            rid = f"{_IDS.getrandbits(128):032x}"  # as HTTP's: an id for logs, not a secret (no syscall)
        logs.CONTEXT.set(_CallLog(rid, model, version))
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        limits = services.limits
        rows = limits.row_charger(principal, "grpc") if limits is not None and principal is not None else None
        return services, CallContext("grpc", principal, rid, deadline, json=services.json_limits, charge_rows=rows)

    # health and metadata ----------------------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services = self.frontend.services()
        return proto.ServerLiveResponse(live=services is None or services.dataplane.live)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services = self.frontend.services()
        ready = services is not None and self.frontend.ready() and services.dataplane.ready
        return proto.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._context(context, "ServerMetadata")
        return self._server_metadata

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "ModelReady", model=request.name, version=request.version)
        dp = services.dataplane
        name, version = request.name, request.version or None
        entry = dp.repository.entry(name, ctx.principal)
        if version is not None and version not in entry.versions():
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'; its versions: {', '.join(entry.versions())}"
            )
        ready = dp.live and (entry.ready if version is None else version in entry.serving)
        return proto.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "ModelMetadata", model=request.name, version=request.version)
        dp = services.dataplane
        name, version = request.name, request.version or None
        handle = dp.resolve(name, ctx, version)
        metadata = v2_codec.codec_for(handle.model).metadata
        versions = dp.repository.entry(name).ready_versions() if version is None else [handle.version]
        return proto.ModelMetadataResponse(
            name=metadata["name"],
            versions=versions,
            platform=metadata["platform"],
            inputs=[_tensor(spec) for spec in metadata["inputs"]],
            outputs=[_tensor(spec) for spec in metadata["outputs"]],
        )

    # inference --------------------------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model, version = request.model_name, request.model_version or None
        services, ctx = await self._context(context, "ModelInfer", model=model, version=version)
        with services.dataplane.call(model, ctx, version) as call:
            model_codec = v2_codec.codec_for(call.model)
            with tracing.span("decode"):
                inference_request, raw = codec.decode(request, model_codec)
            answer = await call.infer(inference_request)
        with tracing.span("encode"):
            return codec.encode(answer, model_codec, raw)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "ModelStatistics")
        body = stats.statistics(services.repository, ctx.principal, request.name or None, request.version or None)
        return json_format.ParseDict(body, proto.ModelStatisticsResponse())

    # the repository extension (with management on, admin keys only) -------------------------------------
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "RepositoryIndex", admin=True)
        _one_repository(request.repository_name)
        dp = services.dataplane
        visible = set(dp.names(ctx))
        rows = [
            r for r in dp.repository.index() if r["name"] in visible and (not request.ready or r["state"] == "READY")
        ]
        response = proto.RepositoryIndexResponse()
        for row in rows:
            response.models.add(name=row["name"], version=row["version"], state=str(row["state"]), reason=row["reason"])
        return response

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "RepositoryModelLoad", admin=True)
        _one_repository(request.repository_name)
        name = _may_use(ctx, request.model_name)
        _repository_parameters(request.parameters, allowed=())
        await services.repository.load_model(name)
        return proto.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        services, ctx = await self._context(context, "RepositoryModelUnload", admin=True)
        _one_repository(request.repository_name)
        name = _may_use(ctx, request.model_name)
        _repository_parameters(request.parameters, allowed=("unload_dependents",))
        await services.repository.unload_model(name)
        return proto.RepositoryModelUnloadResponse()


class _CallLog:
    """The call this task serves, for log records (``logs.LogContext``)."""

    __slots__ = ("model", "request_id", "version")

    def __init__(self, request_id: str, model: str | None, version: str | None) -> None:
        self.request_id = request_id
        self.model = model or None
        self.version = version or None


def _server_span(method: str, context: grpc.aio.ServicerContext) -> AbstractContextManager[Any]:
    """The call's server span (tracing on), continuing a W3C ``traceparent`` sent as metadata."""
    from opentelemetry import trace

    carrier = {k: v for k, v in context.invocation_metadata() or () if k in _PROPAGATED and isinstance(v, str)}
    attributes = {"rpc.system": "grpc", "rpc.service": proto.SERVICE, "rpc.method": method}
    return tracing.tracer().start_as_current_span(
        f"{proto.SERVICE}/{method}",
        context=tracing.extract(carrier) if carrier else None,
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
    )


def _tensor(spec: dict[str, Any]) -> Any:
    return proto.ModelMetadataResponse.TensorMetadata(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])


def _one_repository(name: str) -> None:
    if name:
        raise MalformedRequest(
            f"repository_name: modelapi serves one model repository; leave it empty, got '{name[:40]}'"
        )


def _may_use(ctx: CallContext, name: str) -> str:
    if not name:
        raise MalformedRequest("model_name: missing")
    if ctx.principal is not None and not ctx.principal.can_use(name):
        raise ModelNotFound(f"no model named '{name}'")
    return name


def _repository_parameters(parameters: Any, allowed: tuple[str, ...]) -> None:
    """As over HTTP: a parameter that would make the server read content or a path (``file:``, ``config``) is
    refused, models come from the repository only."""
    check_parameter_names(parameters, allowed)
    value = parameters.get("unload_dependents")
    if value is not None and value.WhichOneof("parameter_choice") != "bool_param":
        raise MalformedRequest("parameters.unload_dependents: must be a boolean (bool_param)")


def _access(method: str, context: grpc.aio.ServicerContext, code: grpc.StatusCode, seconds: float) -> None:
    peer = context.peer() or "-"
    ms = round(seconds * 1000, 3)
    status = STATUSES.get(code, 500)
    ACCESS_LOG.info(
        '%s - "gRPC %s/%s" %s %.1f ms',
        peer,
        proto.SERVICE,
        method,
        code.name,
        ms,
        extra={
            "method": "gRPC",
            "path": f"/{proto.SERVICE}/{method}",
            "status": status,
            "duration_ms": ms,
            "client": peer,
        },
    )
