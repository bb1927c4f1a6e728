"""Stopping a reply: from any caller, partial text kept as cancelled, orphans cleaned up, ownership."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import say, stored_message
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.running import RunningReplies
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.application.store.database import Database
from ziggurat.errors import Conflict, InvalidRequest, NotFound
from ziggurat.model.engine import TextDelta


async def test_stop_from_another_caller_keeps_the_partial_reply_as_cancelled(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(500))
    engine.inter_token_s = 0.005
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="long"))
    received: list[str] = []
    three_tokens = asyncio.Event()

    async def read() -> str:
        async with aclosing(turn.events()) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    received.append(event.text)
                    if len(received) == 3:
                        three_tokens.set()
                else:
                    return event.message.status
        raise AssertionError("the turn ended without a TurnEnd")

    reader = asyncio.create_task(read())
    await three_tokens.wait()
    stopped = await application.chat.stop(alice, conversation.id, turn.reply_id)

    assert await asyncio.wait_for(reader, timeout=5) == "cancelled"
    assert stopped.status == "cancelled" and stopped.finish_reason == "cancelled"
    assert stopped.content == "".join(received) and stopped.content.startswith("w0")
    assert (await stored_message(database, turn.reply_id)).status == "cancelled"
    again = await application.chat.stop(alice, conversation.id, turn.reply_id)
    assert again == stopped


async def test_stop_checks_ownership_and_cleans_up_orphans(
    application: Application, alice: Principal, bob: Principal, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await say(application, alice, conversation.id, "hi")
    with pytest.raises(NotFound):
        await application.chat.stop(bob, conversation.id, turn.reply_id)
    with pytest.raises(InvalidRequest):
        await application.chat.stop(alice, conversation.id, turn.user_message.id)
    assert (await application.chat.stop(alice, conversation.id, turn.reply_id)).status == "complete"

    async with database.session() as session:  # as if the server had died mid-answer
        row = await session.get(Message, turn.reply_id)
        assert row is not None
        row.status = "streaming"
        await session.commit()
    assert (await application.chat.stop(alice, conversation.id, turn.reply_id)).status == "cancelled"


class FakeStream:
    def __init__(self) -> None:
        self.cancelled = 0

    async def cancel(self) -> None:
        self.cancelled += 1


async def test_a_reply_runs_once_and_a_stop_before_submission_cancels_at_once() -> None:
    running = RunningReplies()
    running.begin("r")
    with pytest.raises(Conflict):
        running.begin("r")

    stopping = asyncio.create_task(running.stop("r", timeout_s=5))
    await asyncio.sleep(0)
    stream = FakeStream()
    await running.attach("r", stream)  # type: ignore[arg-type]
    assert stream.cancelled == 1 and "r" in running
    running.end("r", None)
    assert await stopping is None and "r" not in running
    assert await running.stop("r", timeout_s=5) is None
    running.begin("r")
