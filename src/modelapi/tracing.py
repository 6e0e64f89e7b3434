"""Traces: OpenTelemetry spans for requests, queue waits, batches and job chunks (docs/observability.md#traces).

Tracing is on when ``Settings.tracing`` says ``on``, or ``auto`` (the default) with the ``[otel]`` extra
installed and ``OTEL_TRACES_EXPORTER`` or ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` set. Settings reads only
those variables, to decide; the OpenTelemetry SDK reads every ``OTEL_*`` variable itself (endpoint, headers,
sampler, batch delay, service name, resource attributes), as the OpenTelemetry specification has every SDK do,
so modelapi neither copies nor second-guesses them.

The hot path asks ``tracing.ON`` (a module attribute) before doing anything; with tracing off nothing here
imports OpenTelemetry and the per-request cost is a few attribute reads (docs/observability.md has the
figure). The spans:

- ``METHOD /route/{template}``: the server span of one HTTP request (``http/tracing.py``), continuing an
  incoming W3C ``traceparent``;
- ``decode`` and ``encode``: a protocol's codec at work (the protocols' routes);
- ``queue``: from a request's arrival in its version's batcher to the start of its batch (recorded with
  explicit times when the batch starts);
- ``predict``: one per batch run, on the version's thread, child of the oldest request it serves and linked
  to every request span it serves;
- ``job run`` and ``job chunk``: a job run and each chunk it computes.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .logs import TRACE_ID

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("modelapi")
_T = TypeVar("_T")

#: whether spans are recorded; the hot path reads this and nothing else when it is False
ON = False
_tracer: Tracer | None = None
_owned: TracerProvider | None = None  # the provider configure() built, shut down (flushed) by shutdown()

#: the attributes' names: OpenTelemetry's semantic conventions where they have one
MODEL, VERSION, PROTOCOL = "modelapi.model", "modelapi.version", "modelapi.protocol"


class _Noop:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


NOOP = _Noop()


def available() -> bool:
    """Whether the OpenTelemetry SDK is installed (the ``[otel]`` extra)."""
    return importlib.util.find_spec("opentelemetry.sdk") is not None


def wanted(settings: Any) -> bool:
    """Whether ``settings`` turn tracing on (``on``; ``auto``: the SDK installed and an exporter named)."""
    mode = settings.tracing
    if mode == "off" or settings.otel_sdk_disabled:
        return False
    if mode == "on":
        return True
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    named = bool(exporter) and exporter != "none"
    endpoint = bool(settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint)
    return (named or (endpoint and exporter != "none")) and available()


def configure(settings: Any) -> bool:
    """Turn tracing on or off as ``settings`` say (once per process, after any fork); ``auto`` with nothing
    named leaves a provider installed by ``use`` (tests) alone. Returns whether tracing is on."""
    if settings.tracing == "off" or settings.otel_sdk_disabled:
        use(None)
        return False
    if not wanted(settings):
        return ON
    if not available():
        raise ValueError("tracing is on but OpenTelemetry is not installed: pip install 'modelapi[otel]'")
    global _owned
    shutdown()
    _owned = _provider(settings.otel_traces_exporter or "otlp")
    use(_owned)
    return True


def _provider(exporters: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "modelapi"}))
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, limits
    for name in (n.strip().lower() for n in exporters.split(",")):
        exporter: SpanExporter
        if name in ("", "none"):
            continue
        if name in ("otlp", "otlp_proto_http"):
            # OTLP over HTTP/protobuf, the [otel] extra's; OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, ...
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:  # another installed exporter, by its entry point (otlp_proto_grpc, zipkin_json, ...)
            from importlib.metadata import entry_points

            found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
            if not found:
                raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed")
            exporter = found[0].load()()
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_SCHEDULE_DELAY, ...
    return provider


def use(provider: Any) -> None:
    """Record spans with ``provider`` (an SDK ``TracerProvider``; tests pass one with an in-memory exporter), or
    turn tracing off with ``None``."""
    global ON, _tracer
    if provider is None:
        ON, _tracer = False, None
        return
    _tracer = provider.get_tracer("modelapi")
    ON = True


def shutdown() -> None:
    """Flush and stop the provider ``configure`` built (the server's lifespan end); tracing turns off."""
    global _owned
    owned, _owned = _owned, None
    if owned is not None:
        use(None)
        owned.shutdown()


def tracer() -> Tracer:
    assert _tracer is not None, "tracing is off"
    return _tracer


# the calls the request path makes, each only when ON -------------------------------------------------------
def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A child span of the current one around a ``with`` block; a shared no-op when tracing is off."""
    if not ON or _tracer is None:
        return NOOP
    return _tracer.start_as_current_span(name, attributes=attributes)


@contextmanager
def logged(span: Span) -> Iterator[None]:
    """Log records written in this block carry ``span``'s trace id (``logs.TRACE_ID``)."""
    token = TRACE_ID.set(format(span.get_span_context().trace_id, "032x"))
    try:
        yield
    finally:
        TRACE_ID.reset(token)


def annotate(model: str, version: str, protocol: str) -> None:
    """The model and version a call reached, on the current span (the request's)."""
    from opentelemetry import trace

    trace.get_current_span().set_attributes({MODEL: model, VERSION: version, PROTOCOL: protocol})


def capture() -> tuple[Context, int]:
    """The submitting request's context and the time it arrived (ns), for its queue span and batch links."""
    from opentelemetry import context

    return context.get_current(), time.time_ns()


def queued(items: Sequence[tuple[Context, int]], attributes: Mapping[str, Any]) -> None:
    """A ``queue`` span for each request whose batch starts now, from its arrival."""
    now = time.time_ns()
    t = tracer()
    for ctx, arrived in items:
        t.start_span("queue", context=ctx, start_time=arrived, attributes=attributes).end(end_time=now)


def run_batch(
    run: Callable[[Any, int], _T],
    contexts: Sequence[Context],
    attributes: Mapping[str, Any],
    inputs: Any,
    rows: int,
) -> _T:
    """``run(inputs, rows)`` inside one ``predict`` span: a child of the first request's span, linked to every
    request's span (the batch serves them all); called on the version's thread."""
    from opentelemetry import trace

    links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in contexts]
    with tracer().start_as_current_span(
        "predict",
        context=contexts[0],
        links=links,
        attributes={**attributes, "modelapi.batch.rows": rows, "modelapi.batch.requests": len(contexts)},
    ) as span:
        token = TRACE_ID.set(format(span.get_span_context().trace_id, "032x"))
        try:
            return run(inputs, rows)
        finally:
            TRACE_ID.reset(token)


def extract(headers: Mapping[str, str]) -> Context:
    """The context an incoming ``traceparent`` (and ``tracestate``, baggage) carries; OTEL_PROPAGATORS apply."""
    from opentelemetry import propagate

    return propagate.extract(headers)
