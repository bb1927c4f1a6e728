"""Tracing off costs nothing and needs nothing; on, it needs the `otel` extra and says so when missing."""

from __future__ import annotations

import sys

import pytest

from ziggurat.config import Settings, TracingSettings
from ziggurat.tracing.base import NO_TRACER, open_tracer


def test_the_disabled_tracer_hands_out_one_shared_no_op_span() -> None:
    tracer = open_tracer(is_enabled=False, service_name="z", sample_ratio=1.0)
    assert tracer is NO_TRACER and not tracer.is_enabled
    first = tracer.span("a", attributes={"k": "v"})
    assert first is tracer.span("b", kind="server", parent={"traceparent": "x"})
    with first as span:
        span.set_attribute("k", 1)
        span.update_name("c")
        span.set_error("E")
    assert tracer.current_context() == {}
    tracer.shutdown()


def test_tracing_is_on_when_the_otlp_endpoint_is_set_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("ZIGGURAT_TRACING__ENABLED", raising=False)
    assert not Settings().is_tracing_enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert Settings().is_tracing_enabled
    monkeypatch.setenv("ZIGGURAT_TRACING__ENABLED", "false")
    assert not Settings().is_tracing_enabled
    assert Settings(
        tracing=TracingSettings(enabled=True), otel_exporter_otlp_endpoint=None
    ).is_tracing_enabled


def test_wanted_without_the_otel_extra_logs_and_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ziggurat.tracing.otel", None)  # as if opentelemetry-sdk were missing
    assert open_tracer(is_enabled=True, service_name="z", sample_ratio=1.0) is NO_TRACER
    assert [record.getMessage() for record in caplog.records] == ["tracing_unavailable"]
