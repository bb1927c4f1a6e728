"""Conversations: ownership, pagination, and chatting with durable, idempotent messages."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from sqlalchemy import func, select

from tests.application.conftest import MODEL, ScriptedEngine, register
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.application.conversations.turn import ChatTurn, TurnEnd
from ziggurat.application.store.database import Database
from ziggurat.errors import Conflict, InvalidRequest, ModelNotFound, NotFound, UpstreamFailed
from ziggurat.model.engine import GenerationRequest, TextDelta


async def _consume(turn: ChatTurn) -> tuple[str, TurnEnd]:
    text: list[str] = []
    async with aclosing(turn.events()) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            else:
                return "".join(text), event
    raise AssertionError("the turn ended without a TurnEnd")


async def _count_messages(database: Database, conversation_id: str) -> int:
    async with database.session() as session:
        query = select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
        return await session.scalar(query) or 0


@pytest.fixture
async def alice(application: Application) -> Principal:
    return await register(application, "alice@example.com")


@pytest.fixture
async def bob(application: Application, alice: Principal) -> Principal:
    return await register(application, "bob@example.com")


async def test_a_turn_streams_the_reply_and_stores_both_messages(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(
        alice, ConversationCreate(system_prompt="Be brief.")
    )
    turn = await application.conversations.post_message(
        alice, conversation.id, MessageCreate(content="Hi there")
    )
    text, end = await _consume(turn)

    assert text == engine.reply
    reply = end.message
    assert (reply.id, reply.role, reply.status, reply.content) == (
        turn.reply_id,
        "assistant",
        "complete",
        text,
    )
    assert reply.finish_reason == "stop" and reply.model == MODEL
    assert reply.usage is not None and reply.usage.completion_tokens == len(engine.reply.split())
    assert reply.parent_id == turn.user_message.id
    detail = await application.conversations.get(alice, conversation.id)
    assert [(m.role, m.content) for m in detail.messages] == [("user", "Hi there"), ("assistant", text)]
    assert detail.title == "Hi there" and detail.updated_at >= conversation.updated_at
    sent = engine.requests[0]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be brief."), ("user", "Hi there")]


async def test_the_model_sees_earlier_turns(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="Kept"))
    await _consume(
        await application.conversations.post_message(alice, conversation.id, MessageCreate(content="one"))
    )
    await _consume(
        await application.conversations.post_message(alice, conversation.id, MessageCreate(content="two"))
    )

    roles = [(m.role, m.content) for m in engine.requests[1].messages]
    assert roles == [("user", "one"), ("assistant", engine.reply), ("user", "two")]
    assert (await application.conversations.get(alice, conversation.id)).title == "Kept"


async def test_the_user_message_is_committed_before_the_first_token(
    application: Application, alice: Principal, engine: ScriptedEngine, database_url: str
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    seen: list[tuple[str, str]] = []

    async def look_from_another_connection(request: GenerationRequest) -> None:
        observer = Database(database_url)
        try:
            async with observer.session() as session:
                rows = await session.execute(
                    select(Message.role, Message.status).where(Message.conversation_id == conversation.id)
                )
                seen.extend((role, status) for role, status in rows)
        finally:
            await observer.aclose()

    engine.before_first_token = look_from_another_connection
    await _consume(
        await application.conversations.post_message(alice, conversation.id, MessageCreate(content="x"))
    )
    assert sorted(seen) == [("assistant", "streaming"), ("user", "complete")]


async def test_leaving_early_stores_the_partial_reply_as_cancelled(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(200))
    engine.inter_token_s = 0.005
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.conversations.post_message(alice, conversation.id, MessageCreate(content="long"))
    received: list[str] = []
    async with aclosing(turn.events()) as events:
        async for event in events:
            assert isinstance(event, TextDelta)
            received.append(event.text)
            if len(received) == 3:
                break

    async with database.session() as session:
        reply = await session.get(Message, turn.reply_id)
    assert reply is not None
    assert (reply.status, reply.finish_reason, reply.content) == ("cancelled", "cancelled", "".join(received))


async def test_a_cancelled_task_still_stores_the_partial_reply(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(200))
    engine.inter_token_s = 0.005
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.conversations.post_message(alice, conversation.id, MessageCreate(content="long"))
    first_token = asyncio.Event()

    async def read() -> None:
        async with aclosing(turn.events()) as events:
            async for _ in events:
                first_token.set()

    reader = asyncio.create_task(read())
    await first_token.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await application.conversations.aclose()

    async with database.session() as session:
        reply = await session.get(Message, turn.reply_id)
    assert reply is not None and reply.status == "cancelled" and reply.content.startswith("w0")


async def test_an_engine_failure_is_stored_and_raised(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.fail_with = "The GPU caught fire."
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.conversations.post_message(alice, conversation.id, MessageCreate(content="x"))
    with pytest.raises(UpstreamFailed, match="GPU caught fire"):
        await _consume(turn)
    async with database.session() as session:
        reply = await session.get(Message, turn.reply_id)
    assert reply is not None and reply.status == "error" and reply.content


async def test_a_retried_key_replays_the_stored_exchange_without_storing_again(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="only once")
    first = await application.conversations.post_message(alice, conversation.id, message, "key-1")
    first_text, first_end = await _consume(first)

    again = await application.conversations.post_message(alice, conversation.id, message, "key-1")
    assert again.is_replay
    assert (again.user_message.id, again.reply_id) == (first.user_message.id, first.reply_id)
    again_text, again_end = await _consume(again)
    assert (again_text, again_end.message) == (first_text, first_end.message)
    assert await _count_messages(database, conversation.id) == 2
    assert len(engine.requests) == 1


async def test_racing_retries_store_the_message_once(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.gate = asyncio.Event()
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="race")
    results = await asyncio.gather(
        *(application.conversations.post_message(alice, conversation.id, message, "k") for _ in range(4)),
        return_exceptions=True,
    )
    turns = [result for result in results if isinstance(result, ChatTurn)]
    assert len(turns) == 1
    assert all(isinstance(result, Conflict) for result in results if not isinstance(result, ChatTurn))
    engine.gate.set()
    await _consume(turns[0])
    assert await _count_messages(database, conversation.id) == 2


async def test_a_key_reused_for_different_content_is_a_conflict(
    application: Application, alice: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    await _consume(
        await application.conversations.post_message(alice, conversation.id, MessageCreate(content="a"), "k")
    )
    with pytest.raises(Conflict, match="different message"):
        await application.conversations.post_message(alice, conversation.id, MessageCreate(content="b"), "k")


async def test_a_retry_after_a_cut_short_reply_generates_it_again(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(50))
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="again please")
    turn = await application.conversations.post_message(alice, conversation.id, message, "k")
    async with aclosing(turn.events()) as events:
        await anext(events)

    retry = await application.conversations.post_message(alice, conversation.id, message, "k")
    assert not retry.is_replay and retry.reply_id == turn.reply_id
    text, end = await _consume(retry)
    assert text == engine.reply and end.message.status == "complete"
    assert await _count_messages(database, conversation.id) == 2


async def test_users_cannot_see_or_post_to_each_others_conversations(
    application: Application, alice: Principal, bob: Principal, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="secret"))

    with pytest.raises(NotFound):
        await application.conversations.get(bob, conversation.id)
    with pytest.raises(NotFound):
        await application.conversations.post_message(bob, conversation.id, MessageCreate(content="hi"))
    assert (await application.conversations.list_conversations(bob)).data == []
    assert await _count_messages(database, conversation.id) == 0


async def test_listing_pages_newest_first(application: Application, alice: Principal) -> None:
    created = [
        await application.conversations.create(alice, ConversationCreate(title=f"c{i}")) for i in range(5)
    ]
    await _consume(
        await application.conversations.post_message(alice, created[0].id, MessageCreate(content="bump"))
    )
    expected = [created[0].id] + [c.id for c in reversed(created[1:])]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await application.conversations.list_conversations(alice, limit=2, cursor=cursor)
        seen.extend(c.id for c in page.data)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


async def test_listing_refuses_bad_limits_and_cursors(application: Application, alice: Principal) -> None:
    with pytest.raises(InvalidRequest):
        await application.conversations.list_conversations(alice, limit=101)
    with pytest.raises(InvalidRequest) as caught:
        await application.conversations.list_conversations(alice, cursor="not-a-cursor")
    assert caught.value.param == "cursor"


async def test_deleted_conversations_are_not_found(
    application: Application, alice: Principal, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    async with database.session() as session:
        row = await session.get(Conversation, conversation.id)
        assert row is not None
        row.deleted_at = row.created_at
        await session.commit()
    with pytest.raises(NotFound):
        await application.conversations.get(alice, conversation.id)


async def test_unknown_models_are_refused_before_anything_is_stored(
    application: Application, alice: Principal, database: Database
) -> None:
    with pytest.raises(ModelNotFound):
        await application.conversations.create(alice, ConversationCreate(model="gpt-17"))
    conversation = await application.conversations.create(alice, ConversationCreate())
    with pytest.raises(ModelNotFound):
        await application.conversations.post_message(
            alice, conversation.id, MessageCreate(content="x", model="gpt-17")
        )
    assert await _count_messages(database, conversation.id) == 0


def test_messages_must_not_be_blank() -> None:
    with pytest.raises(ValueError, match="empty"):
        MessageCreate(content="   ")
