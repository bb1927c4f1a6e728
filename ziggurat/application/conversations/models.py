"""The `conversations` and `messages` tables.

Messages form a tree through `parent_id` (an assistant reply points at the user
message it answers; a user message at the message before it), so branching
and regeneration can come later without a schema change; today every
conversation is one chain. `UNIQUE(conversation_id, idempotency_key)` is what
makes a retried submit store its message once, even when two retries race:
the database, not a read-then-write check, decides.

The composite indexes are plain ascending: a B-tree serves `ORDER BY ... DESC`
by scanning backwards, and ascending indexes reflect identically on SQLite and
PostgreSQL, so the migration and the models cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

MessageRole = Literal["system", "user", "assistant"]
MessageStatus = Literal["pending", "streaming", "complete", "cancelled", "error"]
IDEMPOTENCY_KEY_MAX_LENGTH = 200
TITLE_MAX_LENGTH = 200
MODEL_NAME_MAX_LENGTH = 200


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_id_updated_at", "user_id", "updated_at", "id"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX_LENGTH))
    model: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX_LENGTH))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        UniqueConstraint("conversation_id", "idempotency_key"),
        CheckConstraint("role IN ('system', 'user', 'assistant')", name="role"),
        CheckConstraint(
            "status IN ('pending', 'streaming', 'complete', 'cancelled', 'error')", name="status"
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX_LENGTH))
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
