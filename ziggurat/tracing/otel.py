"""OpenTelemetry behind ziggurat's `Tracer` interface (needs the `otel` extra).

Each `OtelTracer` owns its `TracerProvider` instead of installing a global one,
so several apps (tests, embedded use) can trace in one process independently.
Context propagation is W3C trace context only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ziggurat import __version__
from ziggurat.telemetry import trace_id_var
from ziggurat.tracing.base import Attributes, AttributeValue, Span, SpanKind

_KINDS = {
    "internal": trace.SpanKind.INTERNAL,
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def set_error(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, error_type))


class OtelTracer:
    """Spans from `provider`; log lines written inside a span carry its `trace_id`."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("ziggurat", __version__)
        self._propagator = TraceContextTextMapPropagator()

    @property
    def is_enabled(self) -> bool:
        return True

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> AbstractContextManager[Span]:
        return self._span(name, kind, parent, attributes)

    @contextmanager
    def _span(
        self, name: str, kind: SpanKind, parent: Mapping[str, str] | None, attributes: Attributes | None
    ) -> Iterator[Span]:
        context = self._propagator.extract(dict(parent)) if parent is not None else None
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,  # an exception's message may quote user input
            set_status_on_exception=False,
        ) as span:
            token = trace_id_var.set(format(span.get_span_context().trace_id, "032x"))
            wrapped = _OtelSpan(span)
            try:
                yield wrapped
            except Exception as exc:
                wrapped.set_error(type(exc).__name__)
                raise
            finally:
                trace_id_var.reset(token)

    def current_context(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def shutdown(self) -> None:
        self._provider.shutdown()


def otlp_tracer(*, service_name: str, sample_ratio: float) -> OtelTracer:
    """Batched OTLP/HTTP export, sampling `sample_ratio` of new traces and following a caller's decision."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OtelTracer(provider)
