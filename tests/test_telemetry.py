"""Logs are structured, carry the request id, and never contain prompts, passwords or keys."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.connection.http.conftest import Account, demo_settings, register
from tests.server import RunningServer, running_server
from ziggurat.config import LogSettings, Settings
from ziggurat.telemetry import JsonFormatter, TextFormatter, configure_logging, get_logger, request_id_var


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


class JsonLines:
    """What the server logged, as `ziggurat serve` configures logging (JSON, here at DEBUG)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


@contextmanager
def json_logs() -> Iterator[JsonLines]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quieted = {name: logging.getLogger(name).level for name in ("aiosqlite", "uvicorn.access")}
    is_access_disabled = logging.getLogger("uvicorn.access").disabled
    logs = JsonLines()
    configure_logging(level="DEBUG", json_format=True, stream=logs.stream)
    try:
        yield logs
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old_level in quieted.items():
            logging.getLogger(name).setLevel(old_level)
        logging.getLogger("uvicorn.access").disabled = is_access_disabled


def chat(server: RunningServer, account: Account, prompt: str) -> httpx.Response:
    """One OpenAI chat request and one chat message in a stored conversation (SSE), with the API key."""
    response = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={"model": "ziggurat-demo", "messages": [{"role": "user", "content": prompt}]},
        headers=account.key_headers,
        timeout=30,
    )
    assert response.status_code == 200
    assert "zebra-unicorns" in response.text  # the demo engine echoes the prompt: it did reach the model
    with httpx.Client(base_url=server.base_url, headers=account.key_headers, timeout=30) as client:
        conversation = client.post("/api/conversations", json={}).json()["id"]
        with client.stream(
            "POST", f"/api/conversations/{conversation}/messages", json={"content": prompt}
        ) as stream:
            assert stream.status_code == 200
            stream.read()
    return response


def user_id_of(server: RunningServer, account: Account) -> str:
    me = httpx.get(server.base_url + "/api/auth/me", headers=account.jwt_headers, timeout=30)
    user_id: str = me.json()["id"]
    return user_id


def test_a_chat_requests_log_lines_carry_its_request_and_user_id(tmp_path: Path) -> None:
    with running_server(demo_settings(tmp_path)) as server:
        account = register(server.base_url, "traced@example.com")
        user_id = user_id_of(server, account)
        with json_logs() as logs:
            response = chat(server, account, "my secret prompt about zebra-unicorns")
    request_id = response.headers["x-request-id"]
    lines = [event for event in logs.events() if event.get("request_id") == request_id]
    assert any(event["event"] == "request" and event["route"] == "/v1/chat/completions" for event in lines)
    assert all(event.get("user_id") == user_id for event in lines)


SECRETS_AND_PROMPT = ("correct horse battery", "zebra-unicorns")


def test_no_secret_or_prompt_reaches_the_json_logs(tmp_path: Path) -> None:
    with running_server(demo_settings(tmp_path)) as server:
        with json_logs() as logs:
            account = register(server.base_url, "private@example.com")
            chat(server, account, "my secret prompt about zebra-unicorns")
    logged = "\n".join(logs.lines)
    assert '"event":"request"' in logged  # the access log was captured at all
    for secret in (account.api_key, account.access_token, *SECRETS_AND_PROMPT):
        assert secret not in logged


def test_prompt_logging_logs_prompts_when_enabled_and_still_no_secret(tmp_path: Path) -> None:
    settings: Settings = demo_settings(tmp_path).model_copy(update={"log": LogSettings(log_prompts=True)})
    with running_server(settings) as server:
        with json_logs() as logs:
            account = register(server.base_url, "open@example.com")
            response = chat(server, account, "my secret prompt about zebra-unicorns")
    prompts = [event for event in logs.events() if event["event"] == "generation_prompt"]
    assert [event["request_id"] for event in prompts][:1] == [response.headers["x-request-id"]]
    assert any("zebra-unicorns" in str(event["messages"]) for event in prompts)
    logged = "\n".join(logs.lines)
    for secret in (account.api_key, account.access_token, "correct horse battery"):
        assert secret not in logged
