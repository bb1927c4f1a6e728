"""SQL for conversations and messages. Gets its session in `__init__`; never commits.

Every read of user data takes the owner's id and filters on it, so a
conversation of another user is simply not found. Message reads join their
conversation for the same reason, even though the service has usually just
checked ownership: the query itself cannot leak. Soft-deleted conversations
(`deleted_at` set) are invisible to every read here; only `purge_deleted`
sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CursorResult, Select, and_, delete, false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.conversations.models import Conversation, Message


@dataclass(slots=True, frozen=True)
class ListPosition:
    """Where a page of the conversation list ended: pinned ones come first, then newest first."""

    is_pinned: bool
    updated_at: datetime
    conversation_id: str


class ConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: Conversation | Message) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, user_id: str, conversation_id: str) -> Conversation | None:
        return await self._session.scalar(
            select(Conversation).where(
                Conversation.id == conversation_id,
                Conversation.user_id == user_id,
                Conversation.deleted_at.is_(None),
            )
        )

    async def list_page(
        self, user_id: str, *, is_archived: bool, limit: int, after: ListPosition | None
    ) -> list[Conversation]:
        """Pinned first, then newest first by (updated_at, id); `after` is the previous page's last row."""
        query = select(Conversation).where(
            Conversation.user_id == user_id,
            Conversation.is_archived == is_archived,
            Conversation.deleted_at.is_(None),
        )
        if after is not None:
            later_in_group = or_(
                Conversation.updated_at < after.updated_at,
                and_(Conversation.updated_at == after.updated_at, Conversation.id < after.conversation_id),
            )
            same_group = and_(Conversation.is_pinned == after.is_pinned, later_in_group)
            # After the last pinned row of a page, every unpinned row still follows.
            query = query.where(
                or_(same_group, Conversation.is_pinned == false()) if after.is_pinned else same_group
            )
        rows = await self._session.scalars(
            query.order_by(
                Conversation.is_pinned.desc(), Conversation.updated_at.desc(), Conversation.id.desc()
            ).limit(limit)
        )
        return list(rows)

    def _messages_of(self, user_id: str, conversation_id: str) -> Select[Message]:
        return (
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.conversation_id == conversation_id,
                Conversation.user_id == user_id,
                Conversation.deleted_at.is_(None),
            )
        )

    async def list_messages(self, user_id: str, conversation_id: str) -> list[Message]:
        """Every message of the conversation, every branch, oldest first."""
        rows = await self._session.scalars(
            self._messages_of(user_id, conversation_id).order_by(Message.created_at, Message.id)
        )
        return list(rows)

    async def get_message(self, user_id: str, conversation_id: str, message_id: str) -> Message | None:
        return await self._session.scalar(
            self._messages_of(user_id, conversation_id).where(Message.id == message_id)
        )

    async def get_by_idempotency_key(self, user_id: str, conversation_id: str, key: str) -> Message | None:
        return await self._session.scalar(
            self._messages_of(user_id, conversation_id).where(Message.idempotency_key == key)
        )

    async def finish_streaming(
        self,
        message_id: str,
        job_id: str | None,
        *,
        content: str,
        status: str,
        finish_reason: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        model: str | None = None,
    ) -> bool:
        """Store a reply's final state once: only while it is still `streaming` by job `job_id`.

        Several gateways may try to store the same reply (its own, and one that
        recovered it after a crash); the condition makes exactly one of them win.
        `model` replaces the reply's model when another one answered (a fallback).
        """
        answered_by = {"model": model} if model is not None else {}
        result = await self._session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == "streaming", Message.job_id == job_id)
            .values(
                content=content,
                status=status,
                finish_reason=finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                **answered_by,
            )
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def streaming_replies(self, *, started_before: datetime, limit: int) -> list[Message]:
        """Replies still marked `streaming` (served by a partial index): candidates for recovery."""
        rows = await self._session.scalars(
            select(Message)
            .where(Message.status == "streaming", Message.created_at < started_before)
            .order_by(Message.created_at)
            .limit(limit)
        )
        return list(rows)

    async def get_owned_message(self, user_id: str, message_id: str) -> Message | None:
        """A message by id, if it belongs to a live conversation of `user_id`."""
        return await self._session.scalar(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.id == message_id, Conversation.user_id == user_id, Conversation.deleted_at.is_(None)
            )
        )

    async def claim_for_retry(self, message_id: str, *, model: str, job_id: str) -> bool:
        """Reset a cancelled or failed reply to `streaming`; False if another request got it first."""
        result = await self._session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status.in_(("cancelled", "error")))
            .values(
                status="streaming",
                job_id=job_id,
                content="",
                model=model,
                finish_reason=None,
                prompt_tokens=None,
                completion_tokens=None,
            )
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def cancel_if_streaming(self, message_id: str) -> bool:
        """Mark a reply that no process is generating any more as cancelled, keeping its text."""
        result = await self._session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == "streaming")
            .values(status="cancelled", finish_reason="cancelled")
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def get_message_by_id(self, message_id: str) -> Message | None:
        """By id alone: only for the message a request itself created (it was authorised then)."""
        return await self._session.get(Message, message_id)

    async def get_conversation_by_id(self, conversation_id: str) -> Conversation | None:
        """By id alone: only for the conversation of a reply a request already authorised."""
        return await self._session.scalar(
            select(Conversation).where(Conversation.id == conversation_id, Conversation.deleted_at.is_(None))
        )

    async def set_generated_title(self, user_id: str, conversation_id: str, title: str) -> bool:
        """Store a model-written title unless the user has named the conversation meanwhile."""
        result = await self._session.execute(
            update(Conversation)
            .where(
                Conversation.id == conversation_id,
                Conversation.user_id == user_id,
                Conversation.deleted_at.is_(None),
                or_(Conversation.title_source.is_(None), Conversation.title_source == "message"),
            )
            .values(title=title, title_source="model")
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def purge_deleted(self, *, deleted_before: datetime) -> int:
        """Remove conversations soft-deleted before the cutoff, with their messages and feedback."""
        result = await self._session.execute(
            delete(Conversation).where(Conversation.deleted_at < deleted_before)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount
