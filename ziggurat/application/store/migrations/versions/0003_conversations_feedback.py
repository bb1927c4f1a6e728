"""Conversations: branches, pins, archive, soft delete, search, presets; feedback.

New tables: `presets` (a user's named parameter sets) and `feedback` (one
rating per assistant answer). Conversations gain `preset_id`, the selected
leaf of their message tree (`current_leaf_id`), who wrote the title
(`title_source`), `is_pinned` and `is_archived`; the list index becomes
(user, archived, pinned, updated_at, id) so the default list (live ones,
pinned first, newest first) is one index range. On PostgreSQL, GIN indexes
over `to_tsvector('simple', ...)` serve full-text search of titles and
messages; SQLite searches with LIKE and gets none (see
`conversations/search.py`).

Existing conversations keep working unchanged: no selected leaf means the
newest message's branch (they are all single chains), and no title source
means a provisional title.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_LIST_INDEX = "ix_conversations_user_id_updated_at"
_LIST_INDEX = "ix_conversations_user_id_is_archived_is_pinned_updated_at"


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), nullable=False)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "presets",
        _id(),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("temperature >= 0 AND temperature <= 2", name=op.f("ck_presets_temperature")),
        sa.CheckConstraint("max_tokens >= 1", name=op.f("ck_presets_max_tokens")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_presets_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_presets"),
        sa.UniqueConstraint("user_id", "name", name="uq_presets_user_id_name"),
    )
    op.drop_index(_OLD_LIST_INDEX, table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("title_source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("preset_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("current_leaf_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("is_pinned", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("is_archived", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.create_foreign_key(
            "fk_conversations_preset_id_presets", "presets", ["preset_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_check_constraint(
            op.f("ck_conversations_title_source"), "title_source IN ('user', 'message', 'model')"
        )
    op.create_index("ix_conversations_preset_id", "conversations", ["preset_id"])
    op.create_index(_LIST_INDEX, "conversations", ["user_id", "is_archived", "is_pinned", "updated_at", "id"])
    op.create_table(
        "feedback",
        _id(),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("thumb", sa.String(8), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("corrected_answer", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("thumb IN ('up', 'down')", name=op.f("ck_feedback_thumb")),
        sa.CheckConstraint("rating >= 1 AND rating <= 5", name=op.f("ck_feedback_rating")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_feedback_message_id_messages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_feedback_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("message_id", name="uq_feedback_message_id"),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at", "id"])
    op.create_index("ix_feedback_user_id_created_at", "feedback", ["user_id", "created_at", "id"])
    if _is_postgresql():
        # The expressions must stay identical to those in conversations/search.py.
        op.create_index(
            "ix_messages_content_fts",
            "messages",
            [sa.text("to_tsvector('simple', content)")],
            postgresql_using="gin",
        )
        op.create_index(
            "ix_conversations_title_fts",
            "conversations",
            [sa.text("to_tsvector('simple', title)")],
            postgresql_using="gin",
        )


def downgrade() -> None:
    if _is_postgresql():
        op.drop_index("ix_conversations_title_fts", table_name="conversations")
        op.drop_index("ix_messages_content_fts", table_name="messages")
    op.drop_index("ix_feedback_user_id_created_at", table_name="feedback")
    op.drop_index("ix_feedback_created_at", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index(_LIST_INDEX, table_name="conversations")
    op.drop_index("ix_conversations_preset_id", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint(op.f("ck_conversations_title_source"), type_="check")
        batch.drop_constraint("fk_conversations_preset_id_presets", type_="foreignkey")
        batch.drop_column("is_archived")
        batch.drop_column("is_pinned")
        batch.drop_column("current_leaf_id")
        batch.drop_column("preset_id")
        batch.drop_column("title_source")
    op.create_index(_OLD_LIST_INDEX, "conversations", ["user_id", "updated_at", "id"])
    op.drop_table("presets")
