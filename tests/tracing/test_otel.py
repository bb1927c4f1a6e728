"""One trace per request, from the gateway through the queue and the worker to the engine.

Runs the real app in process (demo engine, in-process queue) with an
in-memory span exporter. Needs the `otel` extra: under `CI=true` its absence
fails the run, elsewhere the module is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

try:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("the otel extra is not installed: pip install -e '.[otel]'", allow_module_level=True)

import ziggurat.app
from tests.connection.http.inprocess import MODEL, app_client, app_settings, cheap_passwords, sign_up
from ziggurat.app import build_app
from ziggurat.telemetry import JsonFormatter
from ziggurat.tracing.base import Tracer
from ziggurat.tracing.otel import OtelTracer

PROMPT = "a private question about zebra-unicorns"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def in_memory_tracer(*, is_enabled: bool, service_name: str, sample_ratio: float) -> Tracer:
        return OtelTracer(provider)

    monkeypatch.setattr(ziggurat.app, "open_tracer", in_memory_tracer)
    return exporter


async def spans_named(exporter: InMemorySpanExporter, *names: str) -> dict[str, ReadableSpan]:
    """The finished spans by name, once all of `names` have ended (the worker's end after the reply)."""
    async with asyncio.timeout(10):
        while True:
            spans = {span.name: span for span in exporter.get_finished_spans()}
            if all(name in spans for name in names):
                return spans
            await asyncio.sleep(0.01)


def assert_parent(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None and parent.context is not None and child.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id


def attribute_values(spans: Sequence[ReadableSpan]) -> list[str]:
    return [str(value) for span in spans for value in (span.attributes or {}).values()]


class AccessLog(logging.Handler):
    """The access log's lines as JSON, formatted when written (inside the request's span)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(orjson.loads(self.format(record)))


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("ziggurat.access")
    handler, level = AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_chat_request_is_one_trace_from_the_caller_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter, access_log: AccessLog
) -> None:
    cheap_passwords(monkeypatch)
    settings = app_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'z.db'}")
    async with app_client(build_app(settings)) as client:
        session = await sign_up(client, "tracer@example.com")
        exporter.clear()
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6},
            headers={**session.headers, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
        assert response.status_code == 200
        spans = await spans_named(
            exporter, "POST /v1/chat/completions", "generation.submit", "job", "engine.generate"
        )
    server, submit = spans["POST /v1/chat/completions"], spans["generation.submit"]
    job, engine = spans["job"], spans["engine.generate"]

    assert server.context is not None and format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["enduser.id"] == session.user_id
    assert_parent(submit, server)
    assert submit.kind is SpanKind.PRODUCER
    assert_parent(job, submit)  # across the queue: the job carried the submit span's context
    assert job.kind is SpanKind.CONSUMER
    assert_parent(engine, job)
    assert engine.attributes is not None
    assert engine.attributes["gen_ai.request.model"] == MODEL
    assert engine.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert engine.attributes["gen_ai.usage.output_tokens"] == 6
    assert int(str(engine.attributes["gen_ai.usage.input_tokens"])) > 0
    assert engine.status.status_code is StatusCode.UNSET
    assert not any("zebra" in value for value in attribute_values(exporter.get_finished_spans()))
    [logged] = [event for event in access_log.events if event["route"] == "/v1/chat/completions"]
    assert logged["trace_id"] == TRACE_ID  # logs and traces join on it


async def test_an_error_response_marks_the_server_span_by_type_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    cheap_passwords(monkeypatch)
    settings = app_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'z.db'}")
    async with app_client(build_app(settings)) as client:
        response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert response.status_code == 401
        spans = await spans_named(exporter, "POST /v1/chat/completions")
    server = spans["POST /v1/chat/completions"]
    assert server.parent is None  # no caller context: a new trace
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 401
    assert server.status.status_code is StatusCode.UNSET  # a client error is not the server's failure
