"""Roles set every rate limit and quota: tokens per minute, concurrent streams, monthly tokens.

The new columns are nullable and empty: a role that sets nothing keeps the
server's defaults (`ZIGGURAT_LIMITS__*`), so the upgrade changes no one's
limits. Batch mode rebuilds the table on SQLite, which cannot drop columns in
place on older versions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = ("tokens_per_minute", "max_concurrent_streams", "monthly_tokens")


def upgrade() -> None:
    with op.batch_alter_table("roles") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("roles") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
