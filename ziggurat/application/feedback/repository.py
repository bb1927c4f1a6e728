"""SQL for feedback. Gets its session in `__init__`; never commits.

A user's reads and writes join the rated message's conversation and filter
on its owner, so feedback on another user's answer cannot even be found.
Admin reads (review, export) filter on nothing but the admin's filters, and
skip deleted conversations like every other read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVarTuple

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.feedback.models import Feedback
from ziggurat.application.feedback.schemas import FeedbackFilters
from ziggurat.application.presets.models import Preset
from ziggurat.application.users.models import User

_Question = aliased(Message)
Columns = TypeVarTuple("Columns")


@dataclass(slots=True, frozen=True)
class ReviewRow:
    feedback: Feedback
    answer: Message
    user_email: str
    user_role: str
    question: str | None


@dataclass(slots=True, frozen=True)
class ConversationContext:
    """What the export needs of one conversation: its system prompt, every message, their feedback."""

    system_prompt: str | None
    messages: list[Message]


class FeedbackRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, feedback: Feedback) -> None:
        self._session.add(feedback)
        await self._session.flush()

    async def delete(self, feedback: Feedback) -> None:
        await self._session.delete(feedback)
        await self._session.flush()

    async def owned_message(self, user_id: str, message_id: str) -> Message | None:
        return await self._session.scalar(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.id == message_id, Conversation.user_id == user_id, Conversation.deleted_at.is_(None)
            )
        )

    async def get_for_message(self, user_id: str, message_id: str) -> Feedback | None:
        return await self._session.scalar(
            select(Feedback).where(Feedback.message_id == message_id, Feedback.user_id == user_id)
        )

    async def list_own(
        self, user_id: str, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[tuple[Feedback, str]]:
        """A user's feedback with each answer's conversation id, newest first."""
        query = (
            select(Feedback, Message.conversation_id)
            .join(Message, Message.id == Feedback.message_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Feedback.user_id == user_id,
                Conversation.user_id == user_id,
                Conversation.deleted_at.is_(None),
            )
        )
        rows = await self._session.execute(_page(query, before, newest_first=True).limit(limit))
        return [(feedback, conversation_id) for feedback, conversation_id in rows]

    async def review(
        self, filters: FeedbackFilters, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[ReviewRow]:
        query = _filtered(select(Feedback, Message, User.email, User.role, _Question.content), filters)
        query = query.outerjoin(_Question, _Question.id == Message.parent_id)
        rows = await self._session.execute(_page(query, before, newest_first=True).limit(limit))
        return [ReviewRow(*row) for row in rows]

    async def export_batch(
        self, filters: FeedbackFilters, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[tuple[Feedback, Message]]:
        """The next `limit` matching rows, oldest first (an export is stable while it runs)."""
        query = _filtered(select(Feedback, Message), filters)
        rows = await self._session.execute(_page(query, after, newest_first=False).limit(limit))
        return [(feedback, answer) for feedback, answer in rows]

    async def conversations(self, conversation_ids: Iterable[str]) -> dict[str, ConversationContext]:
        ids = list(set(conversation_ids))
        prompts = await self._session.execute(
            select(Conversation.id, Conversation.system_prompt, Preset.system_prompt)
            .outerjoin(Preset, Preset.id == Conversation.preset_id)
            .where(Conversation.id.in_(ids))
        )
        contexts = {row[0]: ConversationContext(row[1] or row[2], []) for row in prompts}
        messages = await self._session.scalars(
            select(Message).where(Message.conversation_id.in_(ids)).order_by(Message.created_at, Message.id)
        )
        for message in messages:
            contexts[message.conversation_id].messages.append(message)
        return contexts

    async def for_messages(self, message_ids: Iterable[str]) -> dict[str, Feedback]:
        rows = await self._session.scalars(select(Feedback).where(Feedback.message_id.in_(list(message_ids))))
        return {row.message_id: row for row in rows}


def _filtered(query: Select[*Columns], filters: FeedbackFilters) -> Select[*Columns]:
    query = (
        query.join(Message, Message.id == Feedback.message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(User, User.id == Feedback.user_id)
        .where(Conversation.deleted_at.is_(None))
    )
    conditions = []
    if filters.thumb is not None:
        conditions.append(Feedback.thumb == filters.thumb)
    if filters.min_rating is not None:
        conditions.append(Feedback.rating >= filters.min_rating)
    if filters.max_rating is not None:
        conditions.append(Feedback.rating <= filters.max_rating)
    if filters.has_correction is not None:
        has = Feedback.corrected_answer.is_not(None)
        conditions.append(has if filters.has_correction else ~has)
    if filters.model is not None:
        conditions.append(Message.model == filters.model)
    if filters.user is not None:
        conditions.append(or_(User.id == filters.user, User.email == filters.user.lower()))
    if filters.role is not None:
        conditions.append(User.role == filters.role)
    if filters.since is not None:
        conditions.append(Feedback.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(Feedback.created_at < filters.until)
    return query.where(*conditions)


def _page(
    query: Select[*Columns], position: tuple[datetime, str] | None, *, newest_first: bool
) -> Select[*Columns]:
    if position is not None:
        at, row_id = position
        if newest_first:
            query = query.where(
                or_(Feedback.created_at < at, and_(Feedback.created_at == at, Feedback.id < row_id))
            )
        else:
            query = query.where(
                or_(Feedback.created_at > at, and_(Feedback.created_at == at, Feedback.id > row_id))
            )
    if newest_first:
        return query.order_by(Feedback.created_at.desc(), Feedback.id.desc())
    return query.order_by(Feedback.created_at, Feedback.id)
