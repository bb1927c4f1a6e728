"""SQL for conversations and messages. Gets its session in `__init__`; never commits.

Every read of user data takes the owner's id and filters on it, so a
conversation of another user is simply not found. Message reads join their
conversation for the same reason, even though the service has usually just
checked ownership: the query itself cannot leak.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, Select, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.conversations.models import Conversation, Message


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

    async def list_recent(
        self, user_id: str, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[Conversation]:
        """Newest first by (updated_at, id); `before` is the last row of the previous page."""
        query = select(Conversation).where(Conversation.user_id == user_id, Conversation.deleted_at.is_(None))
        if before is not None:
            updated_at, conversation_id = before
            query = query.where(
                or_(
                    Conversation.updated_at < updated_at,
                    and_(Conversation.updated_at == updated_at, Conversation.id < conversation_id),
                )
            )
        rows = await self._session.scalars(
            query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit)
        )
        return list(rows)

    def _messages_of(self, user_id: str, conversation_id: str) -> Select[Message]:
        return (
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.conversation_id == conversation_id, Conversation.user_id == user_id)
        )

    async def list_messages(self, user_id: str, conversation_id: str) -> list[Message]:
        rows = await self._session.scalars(
            self._messages_of(user_id, conversation_id).order_by(Message.created_at, Message.id)
        )
        return list(rows)

    async def last_message(self, user_id: str, conversation_id: str) -> Message | None:
        return await self._session.scalar(
            self._messages_of(user_id, conversation_id)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(1)
        )

    async def history(
        self, user_id: str, conversation_id: str, *, up_to: datetime, limit: int
    ) -> list[Message]:
        """The newest `limit` messages worth showing the model, up to `up_to`, oldest first.

        Failed or empty replies are left out: the model should not imitate them.
        """
        rows = await self._session.scalars(
            self._messages_of(user_id, conversation_id)
            .where(
                Message.created_at <= up_to,
                or_(
                    Message.role != "assistant",
                    and_(Message.status.in_(("complete", "cancelled")), Message.content != ""),
                ),
            )
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit)
        )
        return list(reversed(list(rows)))

    async def get_by_idempotency_key(self, user_id: str, conversation_id: str, key: str) -> Message | None:
        return await self._session.scalar(
            self._messages_of(user_id, conversation_id).where(Message.idempotency_key == key)
        )

    async def get_reply(self, user_id: str, conversation_id: str, message_id: str) -> Message | None:
        """The assistant message that answers `message_id`, if any."""
        return await self._session.scalar(
            self._messages_of(user_id, conversation_id)
            .where(Message.parent_id == message_id, Message.role == "assistant")
            .order_by(Message.created_at.desc())
            .limit(1)
        )

    async def claim_for_retry(self, message_id: str, *, model: str) -> bool:
        """Reset a cancelled or failed reply to `streaming`; False if another request got it first."""
        result = await self._session.execute(
            update(Message)
            .where(Message.id == message_id, Message.status.in_(("cancelled", "error")))
            .values(
                status="streaming",
                content="",
                model=model,
                finish_reason=None,
                prompt_tokens=None,
                completion_tokens=None,
            )
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def get_message(self, message_id: str) -> Message | None:
        """By id alone: only for the message a request itself created (it was authorised then)."""
        return await self._session.get(Message, message_id)
