"""The tracing interface every layer uses, its no-op default, and the factory that picks one.

A trace follows one request: the gateway's HTTP span, `generation.submit`, the
worker's `job` span (its parent travels inside the job as W3C `traceparent` /
`tracestate` strings, so it crosses RabbitMQ and process boundaries), and the
engine's `engine.generate` span with the model, token counts and finish reason.

Tracing is off unless asked for (`ZIGGURAT_TRACING__ENABLED`, or
`OTEL_EXPORTER_OTLP_ENDPOINT` set) and the `otel` extra is installed. Off, every
call returns shared no-op objects: nothing is allocated per span and
OpenTelemetry is never imported. Spans carry no prompt or completion text, and
an error is recorded by its type only (messages may quote user input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Literal, Protocol

from ziggurat.telemetry import get_logger

log = get_logger(__name__)

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float | Sequence[str]
Attributes = Mapping[str, AttributeValue]


class Span(Protocol):
    """The part of a span ziggurat writes to."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def update_name(self, name: str) -> None: ...

    def set_error(self, error_type: str) -> None:
        """Mark the span failed, with an error type (never a message: it may quote user input)."""
        ...


class Tracer(Protocol):
    """Starts spans; `span(...)` is a context manager to use in one task (enter and exit alike)."""

    @property
    def is_enabled(self) -> bool: ...

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> AbstractContextManager[Span]:
        """A child of the current span, or of `parent` (W3C headers; empty: a new trace) when given."""
        ...

    def current_context(self) -> dict[str, str]:
        """The current span as W3C trace-context headers, to send with work done elsewhere."""
        ...

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking, a few seconds at most)."""
        ...


class _NoSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None

    def set_error(self, error_type: str) -> None:
        return None


class _NoSpanContext:
    __slots__ = ()

    def __enter__(self) -> Span:
        return _NO_SPAN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN = _NoSpan()
_NO_SPAN_CONTEXT = _NoSpanContext()


class NoTracer:
    """Tracing off: one shared no-op span context for every call."""

    __slots__ = ()

    @property
    def is_enabled(self) -> bool:
        return False

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> AbstractContextManager[Span]:
        return _NO_SPAN_CONTEXT

    def current_context(self) -> dict[str, str]:
        return {}

    def shutdown(self) -> None:
        return None


NO_TRACER: Tracer = NoTracer()


def open_tracer(*, is_enabled: bool, service_name: str, sample_ratio: float) -> Tracer:
    """An OTLP-exporting tracer when tracing is wanted and the `otel` extra is installed, else `NO_TRACER`.

    The exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables (endpoint,
    headers, timeout) itself; `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes.
    """
    if not is_enabled:
        return NO_TRACER
    try:
        from ziggurat.tracing.otel import otlp_tracer
    except ImportError as exc:
        log.warning("tracing_unavailable", missing=exc.name, hint="pip install 'ziggurat[otel]'")
        return NO_TRACER
    tracer = otlp_tracer(service_name=service_name, sample_ratio=sample_ratio)
    log.info("tracing_enabled", service_name=service_name, sample_ratio=sample_ratio)
    return tracer
