"""Conversation tests run without automatic titles (their background jobs would interleave with the
engine requests the tests inspect); `test_titles.py` turns them on where it needs them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing

import pytest

from tests.application.conftest import register
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import MessageCreate
from ziggurat.application.conversations.turn import ChatTurn, TurnDelta, TurnEnd
from ziggurat.application.store.database import Database
from ziggurat.config import ConversationSettings, Settings
from ziggurat.model.engine import ChatMessage


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"conversations": ConversationSettings(auto_title=False)})


@pytest.fixture
async def alice(application: Application) -> Principal:
    return await register(application, "alice@example.com")


@pytest.fixture
async def bob(application: Application, alice: Principal) -> Principal:
    return await register(application, "bob@example.com")


async def consume(turn: ChatTurn) -> tuple[str, TurnEnd]:
    """Read a turn to its end: the streamed text and the stored reply."""
    text: list[str] = []
    async with aclosing(turn.events()) as events:
        async for event in events:
            if isinstance(event, TurnDelta):
                text.append(event.text)
            else:
                return "".join(text), event
    raise AssertionError("the turn ended without a TurnEnd")


async def first_deltas(turn: ChatTurn, count: int) -> list[TurnDelta]:
    """Read the first `count` deltas of a turn, then leave (as a client that drops would)."""
    deltas: list[TurnDelta] = []
    async with aclosing(turn.events()) as events:
        async for event in events:
            assert isinstance(event, TurnDelta)
            deltas.append(event)
            if len(deltas) == count:
                break
    return deltas


async def say(application: Application, principal: Principal, conversation_id: str, content: str) -> ChatTurn:
    """Post a user message and read its reply to the end."""
    turn = await application.chat.post_message(principal, conversation_id, MessageCreate(content=content))
    await consume(turn)
    return turn


async def stored_message(database: Database, message_id: str) -> Message:
    async with database.session() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


def words(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    return [(message.role, message.content) for message in messages]
