"""The server span of each HTTP request, as the outermost middleware; added only when tracing is on.

It continues an incoming W3C ``traceparent`` (the propagators of ``OTEL_PROPAGATORS``, W3C trace context and
baggage by default), makes its span current for the request (so the codec, queue and batch spans are its
children and every log line carries its ``trace_id``), names it ``METHOD /route/{template}`` once routing has
matched, and answers with a ``traceresponse`` header (W3C Trace Context Level 2) naming the trace.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import tracing
from ..security.keys import redact

_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.ON:
            await self.app(scope, receive, send)
            return
        from opentelemetry import trace

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATED}
        parent = tracing.extract(carrier) if carrier else None
        method = scope.get("method", "")
        path = scope.get("path", "")
        attributes = {"http.request.method": method, "url.path": redact(path) if "mk_" in path else path}
        status = 0
        with tracing.tracer().start_as_current_span(
            method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes, record_exception=False
        ) as span:
            ctx = span.get_span_context()
            answer = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode("latin-1")

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), (b"traceresponse", answer)]
                await send(message)

            with tracing.logged(span):
                try:
                    await self.app(scope, receive, send_traced)
                finally:
                    route = getattr(scope.get("route"), "path", None)
                    if route:
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                    rid = scope.get("state", {}).get("request_id")
                    if rid:
                        span.set_attribute("modelapi.request_id", rid)
                    if status:
                        span.set_attribute("http.response.status_code", status)
                    if status >= 500 or not status:
                        span.set_status(trace.StatusCode.ERROR)


def tracing_middleware() -> list[Middleware]:
    """The middleware when tracing is on, else none (nothing on the request path)."""
    return [Middleware(TracingMiddleware)] if tracing.ON else []
