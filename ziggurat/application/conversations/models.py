"""The `conversations` and `messages` tables.

Messages form a tree through `parent_id`: an assistant reply points at the
user message it answers, a user message at the reply before it (or at nothing,
for a first message). Editing a user message adds a sibling with the same
parent; regenerating a reply adds a sibling reply under the same user message.
The conversation remembers which leaf the user looks at (`current_leaf_id`);
the path from the root to that leaf is the conversation the user and the model
see. `current_leaf_id` has no foreign key on purpose: conversations and
messages would reference each other, which needs deferred constraints on
PostgreSQL and table rebuilds on SQLite, and a stale id is harmless because
the service falls back to the newest leaf.

`UNIQUE(conversation_id, idempotency_key)` is what makes a retried submit
store its message once, even when two retries race: the database, not a
read-then-write check, decides.

The composite indexes are plain ascending: a B-tree serves `ORDER BY ... DESC`
by scanning backwards, and ascending indexes reflect identically on SQLite and
PostgreSQL, so the migration and the models cannot drift apart. The
full-text indexes (`SEARCH_INDEXES`) exist on PostgreSQL only and are created
by migration 0003, not declared here: SQLite can neither build nor reflect
expression indexes, so declaring them would make every schema comparison on
SQLite warn.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.presets.models import Preset
from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

MessageRole = Literal["system", "user", "assistant"]
MessageStatus = Literal["pending", "streaming", "complete", "cancelled", "error"]
TitleSource = Literal["user", "message", "model"]
IDEMPOTENCY_KEY_MAX_LENGTH = 200
TITLE_MAX_LENGTH = 200
MODEL_NAME_MAX_LENGTH = 200

# PostgreSQL full-text (GIN) indexes, created by migration 0003 only; see the module docstring.
SEARCH_INDEXES = frozenset({"ix_messages_content_fts", "ix_conversations_title_fts"})


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # The list a user sees: their live (not archived) conversations, pinned first, newest first.
        Index(
            "ix_conversations_user_id_is_archived_is_pinned_updated_at",
            "user_id",
            "is_archived",
            "is_pinned",
            "updated_at",
            "id",
        ),
        CheckConstraint("title_source IN ('user', 'message', 'model')", name="title_source"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX_LENGTH))
    # Who wrote the title: the user (never overwritten), the first message, or the model.
    title_source: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX_LENGTH))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    preset_id: Mapped[str | None] = mapped_column(ForeignKey(Preset.id, ondelete="SET NULL"), index=True)
    current_leaf_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    is_pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        Index(
            "ix_messages_streaming",
            "created_at",
            postgresql_where=text("status = 'streaming'"),
            sqlite_where=text("status = 'streaming'"),
        ),
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
    job_id: Mapped[str | None] = mapped_column(String(64))
    """The broker job generating this reply (while `streaming`); its stream can be read from any gateway."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
