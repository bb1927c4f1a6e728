"""Feedback: only on your own answers; admin review with filters; JSONL export for fine-tuning."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume
from tests.application.feedback.conftest import parse_preference, parse_sft
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.schemas import ConversationCreate, GenerationOverrides, MessageCreate
from ziggurat.application.conversations.turn import ChatTurn
from ziggurat.application.feedback.schemas import FeedbackFilters, FeedbackIn
from ziggurat.application.store.orm import utcnow
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound


async def _ask(
    application: Application, principal: Principal, content: str, *, system_prompt: str | None = None
) -> tuple[str, ChatTurn]:
    conversation = await application.conversations.create(
        principal, ConversationCreate(system_prompt=system_prompt)
    )
    turn = await application.chat.post_message(principal, conversation.id, MessageCreate(content=content))
    await consume(turn)
    return conversation.id, turn


async def _export(
    application: Application, principal: Principal, kind: str, **filters: object
) -> list[bytes]:
    lines = application.feedback.export(principal, kind, FeedbackFilters(**filters))  # type: ignore[arg-type]
    return [line async for line in lines]


async def test_a_user_rates_their_answer_once_and_may_change_it(
    application: Application, alice: Principal
) -> None:
    conversation_id, turn = await _ask(application, alice, "hi")
    created, is_created = await application.feedback.record(
        alice, turn.reply_id, FeedbackIn(thumb="up", comment="nice"), may_replace=False
    )
    assert is_created and created.conversation_id == conversation_id and created.thumb == "up"
    with pytest.raises(Conflict):
        await application.feedback.record(alice, turn.reply_id, FeedbackIn(thumb="down"), may_replace=False)

    replaced, is_created = await application.feedback.record(
        alice, turn.reply_id, FeedbackIn(rating=2, corrected_answer="Hello!"), may_replace=True
    )
    assert not is_created and replaced.id == created.id
    assert (replaced.thumb, replaced.rating, replaced.comment, replaced.corrected_answer) == (
        None,
        2,
        None,
        "Hello!",
    )
    assert await application.feedback.get(alice, turn.reply_id) == replaced
    assert [f.id for f in (await application.feedback.list_own(alice)).data] == [created.id]

    await application.feedback.delete(alice, turn.reply_id)
    with pytest.raises(NotFound):
        await application.feedback.get(alice, turn.reply_id)


async def test_feedback_is_only_for_your_own_answers(
    application: Application, alice: Principal, bob: Principal
) -> None:
    conversation_id, turn = await _ask(application, alice, "hi")
    thumbs_up = FeedbackIn(thumb="up")
    with pytest.raises(NotFound):
        await application.feedback.record(bob, turn.reply_id, thumbs_up, may_replace=True)
    with pytest.raises(InvalidRequest):
        await application.feedback.record(alice, turn.user_message.id, thumbs_up, may_replace=True)
    await application.feedback.record(alice, turn.reply_id, thumbs_up, may_replace=True)
    with pytest.raises(NotFound):
        await application.feedback.get(bob, turn.reply_id)
    with pytest.raises(NotFound):
        await application.feedback.delete(bob, turn.reply_id)
    assert (await application.feedback.list_own(bob)).data == []

    await application.conversations.delete(alice, conversation_id)
    assert (await application.feedback.list_own(alice)).data == []
    with pytest.raises(NotFound):
        await application.feedback.get(alice, turn.reply_id)


def test_feedback_must_say_something() -> None:
    with pytest.raises(ValidationError):
        FeedbackIn()
    with pytest.raises(ValidationError):
        FeedbackIn(comment="   ")
    with pytest.raises(ValidationError):
        FeedbackIn(rating=6)


async def test_own_feedback_pages_newest_first(application: Application, alice: Principal) -> None:
    ids = []
    for index in range(3):
        _, turn = await _ask(application, alice, f"q{index}")
        ids.append(
            (await application.feedback.record(alice, turn.reply_id, FeedbackIn(rating=3), may_replace=True))[
                0
            ].id
        )
    first = await application.feedback.list_own(alice, limit=2)
    second = await application.feedback.list_own(alice, limit=2, cursor=first.next_cursor)
    assert [f.id for f in first.data + second.data] == list(reversed(ids)) and second.next_cursor is None


async def test_admins_review_with_filters_and_others_may_not(
    application: Application, admin: Principal, alice: Principal, bob: Principal
) -> None:
    _, liked = await _ask(application, alice, "What is a ziggurat?")
    _, disliked = await _ask(application, bob, "And a pyramid?")
    await application.feedback.record(
        alice, liked.reply_id, FeedbackIn(thumb="up", rating=5), may_replace=True
    )
    await application.feedback.record(
        bob, disliked.reply_id, FeedbackIn(thumb="down", corrected_answer="A tomb."), may_replace=True
    )

    everything = await application.feedback.review(admin, FeedbackFilters())
    assert [row.user_email for row in everything.data] == ["bob@example.com", "alice@example.com"]
    assert everything.data[1].question == "What is a ziggurat?" and everything.data[1].answer
    assert everything.data[1].user_role == "user" and everything.data[1].model == "test-model"

    async def emails(**filters: object) -> list[str]:
        page = await application.feedback.review(admin, FeedbackFilters(**filters))  # type: ignore[arg-type]
        return [row.user_email for row in page.data]

    assert await emails(thumb="up") == ["alice@example.com"]
    assert await emails(min_rating=4) == ["alice@example.com"]
    assert await emails(has_correction=True) == ["bob@example.com"]
    assert await emails(user="BOB@example.com") == ["bob@example.com"]
    assert await emails(user=alice.user_id) == ["alice@example.com"]
    assert await emails(role="admin") == []
    assert await emails(model="other-model") == []
    assert await emails(since=utcnow() + timedelta(minutes=1)) == []
    assert len(await emails(until=utcnow() + timedelta(minutes=1))) == 2
    with pytest.raises(Forbidden):
        await application.feedback.review(alice, FeedbackFilters())


async def test_sft_export_has_the_chat_shape_and_uses_corrections(
    application: Application, admin: Principal, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation_id, _ = await _ask(application, alice, "one", system_prompt="Be brief.")
    second = await application.chat.post_message(alice, conversation_id, MessageCreate(content="two"))
    await consume(second)
    _, third = await _ask(application, alice, "three")
    _, disliked = await _ask(application, alice, "four")
    await application.feedback.record(alice, second.reply_id, FeedbackIn(thumb="up"), may_replace=True)
    await application.feedback.record(
        alice, third.reply_id, FeedbackIn(corrected_answer="Three!"), may_replace=True
    )
    await application.feedback.record(alice, disliked.reply_id, FeedbackIn(thumb="down"), may_replace=True)

    records = parse_sft(await _export(application, admin, "sft"))
    assert records == [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": engine.reply},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": engine.reply},
        ],
        [{"role": "user", "content": "three"}, {"role": "assistant", "content": "Three!"}],
    ]
    with pytest.raises(Forbidden):
        application.feedback.export(alice, "sft", FeedbackFilters())


async def test_preference_export_pairs_corrections_and_rated_regenerations(
    application: Application, admin: Principal, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation_id, first = await _ask(application, alice, "question")
    engine.reply = "A much better answer"
    again = await application.chat.regenerate(alice, conversation_id, first.reply_id, GenerationOverrides())
    await consume(again)
    await application.feedback.record(alice, first.reply_id, FeedbackIn(thumb="down"), may_replace=True)
    await application.feedback.record(alice, again.reply_id, FeedbackIn(rating=5), may_replace=True)
    _, corrected = await _ask(application, alice, "fix me")
    await application.feedback.record(
        alice, corrected.reply_id, FeedbackIn(corrected_answer="Fixed."), may_replace=True
    )

    records = parse_preference(await _export(application, admin, "preference"))
    assert [
        (r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records
    ] == [
        ("question", "A much better answer", "Hello there, how can I help?"),
        ("fix me", "Fixed.", "A much better answer"),
    ]


async def test_export_filters_reads_in_batches_and_skips_deleted_conversations(
    application: Application, admin: Principal, alice: Principal, bob: Principal
) -> None:
    application.feedback._export_batch_size = 2
    for principal in (alice, bob, alice, bob, alice):
        _, turn = await _ask(application, principal, "hi")
        await application.feedback.record(principal, turn.reply_id, FeedbackIn(thumb="up"), may_replace=True)
    gone, turn = await _ask(application, alice, "forget me")
    await application.feedback.record(alice, turn.reply_id, FeedbackIn(thumb="up"), may_replace=True)
    await application.conversations.delete(alice, gone)

    assert len(parse_sft(await _export(application, admin, "sft"))) == 5
    assert len(parse_sft(await _export(application, admin, "sft", user="alice@example.com"))) == 3
    assert await _export(application, admin, "sft", thumb="down") == []
