"""The messages of active conversations, cached write-through beside the database.

Planning a turn needs the conversation's whole message tree; for an active
conversation that is the same rows again and again. They are cached (in
memory, or in Redis shared by the gateways) under the conversation id and
kept current where they change: new turns are appended and a finished reply
is updated in place. The database stays the source of truth: anything that
changes messages some other way drops the entry, a cached tree that does not
contain the conversation's selected leaf is treated as stale, and every
cache failure falls back to the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.connection.cache.session import SessionCache

_FIELDS = (
    "id",
    "conversation_id",
    "parent_id",
    "role",
    "content",
    "model",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "status",
    "idempotency_key",
    "job_id",
)


def to_cached(message: Message) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(message, name) for name in _FIELDS}
    row["created_at"] = message.created_at.isoformat()
    return row


def from_cached(row: dict[str, Any]) -> Message:
    """A detached `Message` (never added to a session: planning only reads it)."""
    values = {name: row.get(name) for name in _FIELDS}
    return Message(**values, created_at=datetime.fromisoformat(str(row["created_at"])))


class ConversationHistory:
    def __init__(self, sessions: SessionCache | None) -> None:
        self._sessions = sessions

    async def load(
        self, repository: ConversationRepository, user_id: str, conversation_id: str, leaf_id: str | None
    ) -> list[Message]:
        """The conversation's messages (every branch), from the cache when it is current."""
        if self._sessions is None:
            return await repository.list_messages(user_id, conversation_id)
        cached = await self._sessions.get(conversation_id)
        if cached is not None:
            messages = [from_cached(row) for row in cached]
            if leaf_id is None or any(message.id == leaf_id for message in messages):
                return messages
        messages = await repository.list_messages(user_id, conversation_id)
        await self._sessions.put(conversation_id, [to_cached(message) for message in messages])
        return messages

    async def added(self, conversation_id: str, messages: Sequence[Message]) -> None:
        if self._sessions is not None:
            for message in messages:
                await self._sessions.append(conversation_id, to_cached(message))

    async def changed(self, message: Message) -> None:
        if self._sessions is not None:
            await self._sessions.update(message.conversation_id, message.id, to_cached(message))

    async def forget(self, conversation_id: str) -> None:
        if self._sessions is not None:
            await self._sessions.invalidate(conversation_id)
