"""Property: any sequence of posts, edits, regenerations and branch switches keeps a consistent tree.

Runs the real services (database, broker, worker, scripted engine). After
every step: each parent is in the same conversation, roles alternate on every
path, the shown path runs from a root to a leaf, sibling positions agree with
the stored rows, and the model was shown exactly the shown path.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume, words
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import ConversationCreate, GenerationOverrides, MessageCreate
from ziggurat.application.store.database import Database


@dataclass(frozen=True)
class Step:
    kind: str  # post, edit, regenerate, select
    pick: int  # which message an edit, regeneration or selection targets


steps = st.lists(
    st.builds(Step, st.sampled_from(["post", "edit", "regenerate", "select"]), st.integers(0, 50)),
    min_size=1,
    max_size=8,
)


async def _rows(database: Database, conversation_id: str) -> list[Message]:
    async with database.session() as session:
        rows = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at)
        )
        return list(rows)


async def _check(
    application: Application, database: Database, alice: Principal, conversation_id: str
) -> None:
    rows = await _rows(database, conversation_id)
    by_id = {row.id: row for row in rows}
    for row in rows:
        parent = by_id.get(row.parent_id) if row.parent_id is not None else None
        assert row.parent_id is None or parent is not None, "a parent outside the conversation"
        if parent is None:
            assert row.role == "user", "a conversation starts with a user message"
        else:
            assert parent.role == ("user" if row.role == "assistant" else "assistant"), "roles must alternate"
    detail = await application.conversations.get(alice, conversation_id)
    shown = detail.messages
    if not rows:
        assert shown == []
        return
    assert shown[0].parent_id is None
    assert all(child.parent_id == parent.id for parent, child in pairwise(shown))
    assert not any(row.parent_id == shown[-1].id for row in rows), "the shown path must end at a leaf"
    assert detail.current_leaf_id == shown[-1].id
    for message in shown:
        siblings = [row.id for row in rows if row.parent_id == message.parent_id]
        assert message.sibling_ids == siblings
        assert message.sibling_ids[message.sibling_index] == message.id
        assert message.sibling_count == len(siblings)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
async def test_any_sequence_of_chat_actions_keeps_a_consistent_tree(
    application: Application, alice: Principal, engine: ScriptedEngine, database: Database, plan: list[Step]
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    for number, step in enumerate(plan):
        rows = await _rows(database, conversation.id)
        users = [row for row in rows if row.role == "user"]
        replies = [row for row in rows if row.role == "assistant"]
        if step.kind == "post" or not rows:
            turn = await application.chat.post_message(
                alice, conversation.id, MessageCreate(content=f"m{number}")
            )
        elif step.kind == "edit":
            target = users[step.pick % len(users)]
            turn = await application.chat.edit_message(
                alice, conversation.id, target.id, MessageCreate(content=f"e{number}")
            )
        elif step.kind == "regenerate":
            target = replies[step.pick % len(replies)]
            turn = await application.chat.regenerate(alice, conversation.id, target.id, GenerationOverrides())
        else:
            await application.conversations.select_branch(
                alice, conversation.id, rows[step.pick % len(rows)].id
            )
            await _check(application, database, alice, conversation.id)
            continue
        await consume(turn)
        await _check(application, database, alice, conversation.id)
        shown = (await application.conversations.get(alice, conversation.id)).messages
        assert words(engine.requests[-1].messages) == [(m.role, m.content) for m in shown[:-1]]
