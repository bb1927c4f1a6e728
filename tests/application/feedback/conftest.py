"""Feedback tests: chat without automatic titles, and checks of the fine-tuning line shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.application.conftest import register
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.config import ConversationSettings, Settings

ROLES = {"system", "user", "assistant"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"conversations": ConversationSettings(auto_title=False)})


@pytest.fixture
async def admin(application: Application) -> Principal:
    return await register(application, "admin@example.com")  # the first account is the admin


@pytest.fixture
async def alice(application: Application, admin: Principal) -> Principal:
    return await register(application, "alice@example.com")


@pytest.fixture
async def bob(application: Application, alice: Principal) -> Principal:
    return await register(application, "bob@example.com")


def check_chat(messages: Any, *, ends_with: str) -> None:
    """Valid chat fine-tuning messages: known roles, system only first, then user/assistant alternating."""
    assert isinstance(messages, list) and messages
    assert all(set(m) == {"role", "content"} and m["role"] in ROLES for m in messages)
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2) + ["user"] * (
        len(turns) % 2
    )
    assert turns[-1]["role"] == ends_with


def parse_sft(lines: list[bytes]) -> list[list[dict[str, str]]]:
    records = []
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        record = orjson.loads(line)
        assert set(record) == {"messages"}
        check_chat(record["messages"], ends_with="assistant")
        records.append(record["messages"])
    return records


def parse_preference(lines: list[bytes]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = orjson.loads(line)
        assert set(record) == {"prompt", "chosen", "rejected"}
        check_chat(record["prompt"], ends_with="user")
        for side in ("chosen", "rejected"):
            assert (
                len(record[side]) == 1
                and record[side][0]["role"] == "assistant"
                and record[side][0]["content"]
            )
        assert record["chosen"] != record["rejected"]
        records.append(record)
    return records
