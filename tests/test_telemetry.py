"""Logs are structured, carry the request id, and never contain prompts, passwords or keys."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import orjson
import pytest

from tests.connection.http.conftest import demo_settings, register
from tests.server import running_server
from ziggurat.telemetry import JsonFormatter, TextFormatter, get_logger, request_id_var


def test_json_formatter_emits_event_fields_and_request_id() -> None:
    record = logging.LogRecord("ziggurat.test", logging.INFO, __file__, 1, "job_admitted", None, None)
    record.priority = 9
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    payload = orjson.loads(line)
    assert payload["event"] == "job_admitted"
    assert payload["priority"] == 9
    assert payload["request_id"] == "req-1"
    assert payload["level"] == "info"


def test_text_formatter_hides_uvicorn_color_duplicates() -> None:
    record = logging.LogRecord("uvicorn", logging.INFO, __file__, 1, "Started", None, None)
    record.color_message = "\x1b[36mStarted\x1b[0m"
    assert "color_message" not in TextFormatter().format(record)


def test_struct_logger_passes_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        get_logger("ziggurat.test").info("something_happened", count=3)
    [record] = caplog.records
    assert record.getMessage() == "something_happened"
    assert record.__dict__["count"] == 3


def test_no_secret_or_prompt_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prompt = "my secret prompt about zebra-unicorns"
    with caplog.at_level(logging.DEBUG), running_server(demo_settings(tmp_path)) as server:
        account = register(server.base_url, "private@example.com")
        response = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": "ziggurat-demo", "messages": [{"role": "user", "content": prompt}]},
            headers=account.key_headers,
            timeout=30,
        )
        assert response.status_code == 200
        assert "zebra-unicorns" in response.text  # the demo engine echoes the prompt: it did reach the model
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "request" in logged  # the access log was captured at all
    for secret in (account.api_key, account.access_token, "correct horse battery", "zebra-unicorns"):
        assert secret not in logged
