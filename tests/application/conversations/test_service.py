"""Conversations: ownership, listing (pinned first, archive), changes, soft delete and purge, search."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.application.conftest import register
from tests.application.conversations.conftest import say
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.conversations.schemas import ConversationCreate, ConversationUpdate, MessageCreate
from ziggurat.application.conversations.search import make_snippet
from ziggurat.application.presets.schemas import PresetCreate
from ziggurat.application.store.database import Database
from ziggurat.errors import Forbidden, InvalidRequest, NotFound


async def _ids(application: Application, principal: Principal, **options: object) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await application.conversations.list_conversations(
            principal,
            limit=2,
            cursor=cursor,
            **options,  # type: ignore[arg-type]
        )
        seen.extend(c.id for c in page.data)
        cursor = page.next_cursor
        if cursor is None:
            return seen


async def test_users_cannot_see_change_or_delete_each_others_conversations(
    application: Application, alice: Principal, bob: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="secret"))
    await say(application, alice, conversation.id, "private words")

    with pytest.raises(NotFound):
        await application.conversations.get(bob, conversation.id)
    with pytest.raises(NotFound):
        await application.conversations.update(bob, conversation.id, ConversationUpdate(title="mine now"))
    with pytest.raises(NotFound):
        await application.conversations.delete(bob, conversation.id)
    assert (await application.conversations.list_conversations(bob)).data == []
    assert (await application.conversations.search(bob, "private")).data == []
    assert (await application.conversations.search(bob, "secret")).data == []
    assert (await application.conversations.get(alice, conversation.id)).title == "secret"


async def test_listing_pages_pinned_first_then_newest_first(
    application: Application, alice: Principal
) -> None:
    created = [
        await application.conversations.create(alice, ConversationCreate(title=f"c{i}")) for i in range(5)
    ]
    await say(application, alice, created[0].id, "bump")
    for index in (1, 3):
        await application.conversations.update(alice, created[index].id, ConversationUpdate(pinned=True))

    expected = [created[3].id, created[1].id, created[0].id, created[4].id, created[2].id]
    assert await _ids(application, alice) == expected


async def test_archived_conversations_are_listed_apart(application: Application, alice: Principal) -> None:
    kept = await application.conversations.create(alice, ConversationCreate(title="kept"))
    old = await application.conversations.create(alice, ConversationCreate(title="old"))
    archived = await application.conversations.update(alice, old.id, ConversationUpdate(archived=True))

    assert archived.archived and not archived.pinned
    assert await _ids(application, alice) == [kept.id]
    assert await _ids(application, alice, archived=True) == [old.id]
    await application.conversations.update(alice, old.id, ConversationUpdate(archived=False))
    assert set(await _ids(application, alice)) == {kept.id, old.id}


async def test_listing_refuses_bad_limits_and_cursors(application: Application, alice: Principal) -> None:
    with pytest.raises(InvalidRequest):
        await application.conversations.list_conversations(alice, limit=101)
    with pytest.raises(InvalidRequest) as caught:
        await application.conversations.list_conversations(alice, cursor="not-a-cursor")
    assert caught.value.param == "cursor"


async def test_renaming_and_settings_are_kept_and_a_user_title_is_never_replaced(
    application: Application, alice: Principal
) -> None:
    preset = await application.presets.create(alice, PresetCreate(name="p"))
    conversation = await application.conversations.create(alice, ConversationCreate())
    await say(application, alice, conversation.id, "first message")
    assert (await application.conversations.get(alice, conversation.id)).title == "first message"

    changed = await application.conversations.update(
        alice,
        conversation.id,
        ConversationUpdate(title="  Named  ", system_prompt="Be kind.", preset_id=preset.id, pinned=True),
    )
    assert (changed.title, changed.system_prompt, changed.preset_id, changed.pinned) == (
        "Named",
        "Be kind.",
        preset.id,
        True,
    )
    cleared = await application.conversations.update(
        alice, conversation.id, ConversationUpdate(preset_id=None)
    )
    assert cleared.preset_id is None and cleared.title == "Named"


async def test_another_users_preset_cannot_be_attached(
    application: Application, alice: Principal, bob: Principal
) -> None:
    bobs = await application.presets.create(bob, PresetCreate(name="bob's"))
    with pytest.raises(NotFound):
        await application.conversations.create(alice, ConversationCreate(preset_id=bobs.id))
    conversation = await application.conversations.create(alice, ConversationCreate())
    with pytest.raises(NotFound):
        await application.conversations.update(alice, conversation.id, ConversationUpdate(preset_id=bobs.id))


async def test_deleted_conversations_are_hidden_everywhere(
    application: Application, alice: Principal
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate(title="gone soon"))
    await say(application, alice, conversation.id, "remember this")
    await application.conversations.delete(alice, conversation.id)

    with pytest.raises(NotFound):
        await application.conversations.get(alice, conversation.id)
    with pytest.raises(NotFound):
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="hello?"))
    with pytest.raises(NotFound):
        await application.conversations.delete(alice, conversation.id)
    assert (await application.conversations.list_conversations(alice)).data == []
    assert (await application.conversations.list_conversations(alice, archived=True)).data == []
    assert (await application.conversations.search(alice, "remember")).data == []


async def test_purge_removes_long_deleted_conversations_with_their_messages(
    application: Application, alice: Principal, database: Database
) -> None:
    old = await application.conversations.create(alice, ConversationCreate())
    recent = await application.conversations.create(alice, ConversationCreate())
    live = await application.conversations.create(alice, ConversationCreate())
    for conversation in (old, recent, live):
        await say(application, alice, conversation.id, "hi")
    await application.conversations.delete(alice, old.id)
    await application.conversations.delete(alice, recent.id)
    async with database.session() as session:
        row = await session.get(Conversation, old.id)
        assert row is not None and row.deleted_at is not None
        row.deleted_at -= timedelta(days=31)
        await session.commit()

    user = await register(application, "plain@example.com")
    with pytest.raises(Forbidden):
        await application.conversations.purge_deleted(user, older_than=timedelta(days=30))
    assert await application.conversations.purge_deleted(alice, older_than=timedelta(days=30)) == 1

    async with database.session() as session:
        remaining = set(await session.scalars(select(Conversation.id)))
        orphans = await session.scalar(
            select(func.count()).select_from(Message).where(Message.conversation_id == old.id)
        )
    assert remaining == {recent.id, live.id} and orphans == 0


async def test_search_finds_titles_and_message_text_with_snippets(
    application: Application, alice: Principal
) -> None:
    trip = await application.conversations.create(alice, ConversationCreate(title="Trip to Kyoto"))
    await say(application, alice, trip.id, "Which temples should I visit in spring?")
    other = await application.conversations.create(alice, ConversationCreate(title="Cooking"))
    await say(application, alice, other.id, "How long do I boil an egg?")

    by_title = await application.conversations.search(alice, "kyoto")
    assert [(hit.conversation.id, hit.message_id) for hit in by_title.data] == [(trip.id, None)]
    assert by_title.data[0].snippet == "Trip to Kyoto"
    assert by_title.data[0].highlights == [(8, 13)]

    by_text = await application.conversations.search(alice, "temples spring")
    assert len(by_text.data) == 1 and by_text.data[0].conversation.id == trip.id
    hit = by_text.data[0]
    assert hit.role == "user" and "temples" in hit.snippet
    assert [hit.snippet[start:end] for start, end in hit.highlights] == ["temples", "spring"]
    assert (await application.conversations.search(alice, "temples egg")).data == []
    assert (await application.conversations.search(alice, "   ")).data == []


async def test_search_limit_is_checked(application: Application, alice: Principal) -> None:
    with pytest.raises(InvalidRequest):
        await application.conversations.search(alice, "x", limit=0)


def test_snippets_cut_around_the_first_match_at_a_word_boundary() -> None:
    text = "word " * 100 + "needle in a haystack " + "tail " * 100
    snippet = make_snippet(text, ["needle"], width=60)
    assert snippet.text.startswith("…") and snippet.text.endswith("…")
    start, end = snippet.highlights[0]
    assert snippet.text[start:end] == "needle"
    assert not snippet.text[1:].startswith("ord")
    assert make_snippet("short text", []).text == "short text"
    assert make_snippet("Kyoto 京都 trip", ["京都"]).highlights == [(6, 8)]


async def test_selecting_an_unknown_message_is_not_found(application: Application, alice: Principal) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    with pytest.raises(NotFound):
        await application.conversations.select_branch(alice, conversation.id, "nope")
