"""Chatting: durable, idempotent turns; edits and regenerations as branches; stop; parameters; usage."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from sqlalchemy import func, select

from tests.application.conftest import MODEL, ScriptedEngine
from tests.application.conversations.conftest import consume, first_deltas, say, stored_message, words
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import ConversationCreate, GenerationOverrides, MessageCreate
from ziggurat.application.conversations.turn import ChatTurn
from ziggurat.application.presets.schemas import PresetCreate
from ziggurat.application.store.database import Database
from ziggurat.application.usage.models import UsageEvent
from ziggurat.errors import Conflict, InvalidRequest, ModelNotFound, NotFound, UpstreamFailed
from ziggurat.model.engine import GenerationRequest


async def _count_messages(database: Database, conversation_id: str) -> int:
    async with database.session() as session:
        query = select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
        return await session.scalar(query) or 0


async def test_a_turn_streams_the_reply_and_stores_both_messages(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(
        alice, ConversationCreate(system_prompt="Be brief.")
    )
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="Hi there"))
    text, end = await consume(turn)

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
    assert detail.title == "Hi there" and detail.current_leaf_id == reply.id
    assert words(engine.requests[0].messages) == [("system", "Be brief."), ("user", "Hi there")]
    assert turn.context is not None and not turn.context.truncated and turn.context.prompt_tokens > 0


async def test_the_model_sees_earlier_turns(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="Kept"))
    await say(application, alice, conversation.id, "one")
    await say(application, alice, conversation.id, "two")

    assert words(engine.requests[1].messages) == [
        ("user", "one"),
        ("assistant", engine.reply),
        ("user", "two"),
    ]
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
    await say(application, alice, conversation.id, "x")
    assert sorted(seen) == [("assistant", "streaming"), ("user", "complete")]


async def test_leaving_early_does_not_stop_the_reply_which_is_stored_whole(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(60))
    engine.inter_token_s = 0.002
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="long"))
    received = await first_deltas(turn, 3)

    stored = await application.chat.wait_stored(turn.reply_id, timeout_s=10)
    assert (stored.status, stored.content) == ("complete", engine.reply)
    assert stored.content.startswith("".join(d.text for d in received))


async def test_a_client_that_drops_resumes_after_the_last_entry_it_saw(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(40))
    engine.inter_token_s = 0.002
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="long"))
    seen = await first_deltas(turn, 5)

    resumed = await application.chat.resume(alice, turn.reply_id, after=seen[-1].entry_id)
    rest, end = await consume(resumed)
    assert "".join(d.text for d in seen) + rest == engine.reply
    assert end.message.status == "complete" and end.message.content == engine.reply
    # Once stored, a resume gets the whole reply as one final event.
    again, end = await consume(await application.chat.resume(alice, turn.reply_id, after=seen[-1].entry_id))
    assert again == "" and end.message.content == engine.reply


async def test_nobody_resumes_another_users_reply(
    application: Application, alice: Principal, bob: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await say(application, alice, conversation.id, "mine")
    with pytest.raises(NotFound):
        await application.chat.resume(bob, turn.reply_id, after=None)
    with pytest.raises(NotFound):
        await application.chat.resume(alice, turn.user_message.id, after=None)


async def test_a_cancelled_task_still_stores_the_partial_reply(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(200))
    engine.inter_token_s = 0.005
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="long"))
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
    await application.chat.aclose()

    reply = await stored_message(database, turn.reply_id)
    assert reply.status == "cancelled" and reply.content.startswith("w0")


async def test_an_engine_failure_is_stored_and_raised(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.fail_with = "The GPU caught fire."
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="x"))
    with pytest.raises(UpstreamFailed, match="GPU caught fire"):
        await consume(turn)
    reply = await stored_message(database, turn.reply_id)
    assert reply.status == "error" and reply.content


async def test_a_retried_key_replays_the_stored_exchange_without_storing_again(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="only once")
    first = await application.chat.post_message(alice, conversation.id, message, "key-1")
    first_text, first_end = await consume(first)

    again = await application.chat.post_message(alice, conversation.id, message, "key-1")
    assert again.is_replay
    assert (again.user_message.id, again.reply_id) == (first.user_message.id, first.reply_id)
    again_text, again_end = await consume(again)
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
        *(application.chat.post_message(alice, conversation.id, message, "k") for _ in range(4)),
        return_exceptions=True,
    )
    turns = [result for result in results if isinstance(result, ChatTurn)]
    assert len(turns) == 1
    assert all(isinstance(result, Conflict) for result in results if not isinstance(result, ChatTurn))
    engine.gate.set()
    await consume(turns[0])
    assert await _count_messages(database, conversation.id) == 2


async def test_a_key_reused_for_different_content_is_a_conflict(
    application: Application, alice: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    await consume(
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="a"), "k")
    )
    with pytest.raises(Conflict, match="different message"):
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="b"), "k")


async def test_a_retry_after_a_cut_short_reply_generates_it_again(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(50))
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="again please")
    engine.inter_token_s = 0.01
    turn = await application.chat.post_message(alice, conversation.id, message, "k")
    await first_deltas(turn, 1)
    stopped = await application.chat.stop(alice, conversation.id, turn.reply_id)
    assert stopped.status == "cancelled"

    engine.inter_token_s = 0
    retry = await application.chat.post_message(alice, conversation.id, message, "k")
    assert not retry.is_replay and retry.reply_id == turn.reply_id
    text, end = await consume(retry)
    assert text == engine.reply and end.message.status == "complete"
    assert await _count_messages(database, conversation.id) == 2


async def test_editing_a_message_makes_a_sibling_branch_and_the_model_sees_only_it(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    first = await say(application, alice, conversation.id, "one")
    second = await say(application, alice, conversation.id, "two")

    edited = await application.chat.edit_message(
        alice, conversation.id, second.user_message.id, MessageCreate(content="two, better")
    )
    await consume(edited)

    assert edited.user_message.parent_id == second.user_message.parent_id == first.reply_id
    assert words(engine.requests[-1].messages) == [
        ("user", "one"),
        ("assistant", engine.reply),
        ("user", "two, better"),
    ]
    detail = await application.conversations.get(alice, conversation.id)
    assert [m.content for m in detail.messages][:3] == ["one", engine.reply, "two, better"]
    shown_edit = detail.messages[2]
    assert (shown_edit.sibling_index, shown_edit.sibling_count) == (1, 2)
    assert shown_edit.sibling_ids == [second.user_message.id, edited.user_message.id]
    assert detail.current_leaf_id == edited.reply_id


async def test_regenerating_adds_a_sibling_reply_and_branches_can_be_switched(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    first = await say(application, alice, conversation.id, "question")
    engine.reply = "A better answer"
    again = await application.chat.regenerate(alice, conversation.id, first.reply_id, GenerationOverrides())
    await consume(again)

    assert again.user_message.id == first.user_message.id
    assert words(engine.requests[-1].messages) == [("user", "question")]
    detail = await application.conversations.get(alice, conversation.id)
    assert [m.content for m in detail.messages] == ["question", "A better answer"]
    assert detail.messages[1].sibling_ids == [first.reply_id, again.reply_id]

    switched = await application.conversations.select_branch(alice, conversation.id, first.reply_id)
    assert switched.current_leaf_id == first.reply_id
    assert switched.messages[1].sibling_index == 0
    await say(application, alice, conversation.id, "follow-up")
    assert words(engine.requests[-1].messages)[1] == ("assistant", "Hello there, how can I help?")


async def test_edit_and_regenerate_refuse_the_wrong_kind_of_message(
    application: Application, alice: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await say(application, alice, conversation.id, "hi")
    with pytest.raises(InvalidRequest):
        await application.chat.edit_message(alice, conversation.id, turn.reply_id, MessageCreate(content="x"))
    with pytest.raises(InvalidRequest):
        await application.chat.regenerate(alice, conversation.id, turn.user_message.id, GenerationOverrides())
    with pytest.raises(NotFound):
        await application.chat.regenerate(alice, conversation.id, "no-such-message", GenerationOverrides())


async def test_idempotency_keys_protect_edits_and_regenerations(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await say(application, alice, conversation.id, "hi")
    regenerate = GenerationOverrides()
    first = await application.chat.regenerate(alice, conversation.id, turn.reply_id, regenerate, "r1")
    await consume(first)
    replay = await application.chat.regenerate(alice, conversation.id, turn.reply_id, regenerate, "r1")
    assert replay.is_replay and replay.reply_id == first.reply_id

    edit = MessageCreate(content="hello")
    edited = await application.chat.edit_message(alice, conversation.id, turn.user_message.id, edit, "e1")
    await consume(edited)
    again = await application.chat.edit_message(alice, conversation.id, turn.user_message.id, edit, "e1")
    assert again.is_replay and again.user_message.id == edited.user_message.id
    with pytest.raises(Conflict):
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="x"), "r1")
    assert await _count_messages(database, conversation.id) == 5
    assert len(engine.requests) == 3


async def test_parameters_come_from_the_message_then_the_conversation_then_its_preset(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    preset = await application.presets.create(
        alice, PresetCreate(name="Terse", system_prompt="Be terse.", temperature=0.2, max_tokens=64)
    )
    conversation = await application.conversations.create(alice, ConversationCreate(preset_id=preset.id))
    await say(application, alice, conversation.id, "a")
    sent = engine.requests[-1]
    assert sent.messages[0].content == "Be terse."
    assert (sent.params.temperature, sent.params.max_tokens) == (0.2, 64)

    overrides = MessageCreate(content="b", temperature=0.9, max_tokens=8)
    await consume(await application.chat.post_message(alice, conversation.id, overrides))
    assert (engine.requests[-1].params.temperature, engine.requests[-1].params.max_tokens) == (0.9, 8)


async def test_unknown_models_are_refused_before_anything_is_stored(
    application: Application, alice: Principal, database: Database
) -> None:
    with pytest.raises(ModelNotFound):
        await application.conversations.create(alice, ConversationCreate(model="gpt-17"))
    conversation = await application.conversations.create(alice, ConversationCreate())
    with pytest.raises(ModelNotFound):
        await application.chat.post_message(
            alice, conversation.id, MessageCreate(content="x", model="gpt-17")
        )
    assert await _count_messages(database, conversation.id) == 0


async def test_users_cannot_post_to_or_branch_each_others_conversations(
    application: Application, alice: Principal, bob: Principal, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="secret"))
    turn = await say(application, alice, conversation.id, "mine")
    with pytest.raises(NotFound):
        await application.chat.post_message(bob, conversation.id, MessageCreate(content="hi"))
    with pytest.raises(NotFound):
        await application.chat.edit_message(
            bob, conversation.id, turn.user_message.id, MessageCreate(content="x")
        )
    with pytest.raises(NotFound):
        await application.chat.regenerate(bob, conversation.id, turn.reply_id, GenerationOverrides())
    with pytest.raises(NotFound):
        await application.conversations.select_branch(bob, conversation.id, turn.reply_id)
    assert await _count_messages(database, conversation.id) == 2


async def test_finished_chat_replies_are_recorded_as_usage(
    application: Application, alice: Principal, database: Database
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    await say(application, alice, conversation.id, "count me")
    await application.usage.flush()
    async with database.session() as session:
        rows = list(await session.scalars(select(UsageEvent)))
    assert [(row.user_id, row.model, row.source) for row in rows] == [(alice.user_id, MODEL, "chat")]


async def test_active_conversations_plan_turns_from_the_session_cache(
    application: Application, alice: Principal, engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ziggurat.application.conversations.repository import ConversationRepository

    reads: list[str] = []
    list_messages = ConversationRepository.list_messages

    async def counting(self: ConversationRepository, user_id: str, conversation_id: str) -> list[Message]:
        reads.append(conversation_id)
        return await list_messages(self, user_id, conversation_id)

    monkeypatch.setattr(ConversationRepository, "list_messages", counting)
    conversation = await application.conversations.create(alice, ConversationCreate())
    await say(application, alice, conversation.id, "one")
    await say(application, alice, conversation.id, "two")
    third = await say(application, alice, conversation.id, "three")
    assert reads == [conversation.id]  # only the first turn read the database
    # Written through: the model saw every earlier exchange, complete.
    assert words(engine.requests[-1].messages) == [
        ("user", "one"),
        ("assistant", engine.reply),
        ("user", "two"),
        ("assistant", engine.reply),
        ("user", "three"),
    ]
    assert (await application.chat.wait_stored(third.reply_id, timeout_s=5)).status == "complete"
