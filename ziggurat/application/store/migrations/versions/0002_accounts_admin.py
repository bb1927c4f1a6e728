"""Accounts, RBAC and admin: roles, invitations, login lockout, OIDC identities, audit log.

Users: the role check constraint goes (custom roles live in `roles`), role
names grow to 64 characters, OIDC-only accounts have no password hash, and a
session version lets "sign out everywhere" kill access tokens. New tables:
roles, invitations, user_identities, model_registry, usage_events,
audit_events. Lockout counts live outside the database.

Downgrading gives users with a custom role the role `user`, and OIDC-only
accounts an unusable password hash (`!`), so the old constraints hold again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), nullable=False)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _upgrade_users() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.alter_column("role", existing_type=sa.String(16), type_=sa.String(64), existing_nullable=False)
        batch.alter_column("password_hash", existing_type=sa.String(255), nullable=True)
        batch.add_column(
            sa.Column("session_version", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.create_index("ix_users_created_at", "users", ["created_at", "id"])


def _create_account_tables() -> None:
    op.create_table(
        "roles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=False),
        sa.Column("daily_tokens", sa.Integer(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", name="pk_roles"),
    )
    op.create_table(
        "invitations",
        _id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=True),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        _timestamp("accepted_at", nullable=True),
        sa.Column("accepted_by", sa.String(36), nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_invitations_created_by_users", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["accepted_by"], ["users.id"], name="fk_invitations_accepted_by_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index("ix_invitations_email", "invitations", ["email"])
    op.create_table(
        "user_identities",
        _id(),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        _timestamp("created_at"),
        _timestamp("last_login_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_identities_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_user_identities"),
        sa.UniqueConstraint("issuer", "subject", name="uq_user_identities_issuer_subject"),
    )
    op.create_index("ix_user_identities_user_id", "user_identities", ["user_id"])


def _create_admin_tables() -> None:
    op.create_table(
        "model_registry",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("engine", sa.String(64), nullable=True),
        sa.Column("adapter", sa.String(200), nullable=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("context_length", sa.Integer(), nullable=True),
        sa.Column("default_parameters", sa.JSON(), nullable=False),
        sa.Column("allowed_roles", sa.JSON(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_model_registry"),
        sa.UniqueConstraint("name", name="uq_model_registry_name"),
    )
    op.create_table(
        "usage_events",
        _id(),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_usage_events_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage_events"),
    )
    op.create_index("ix_usage_events_user_id_day", "usage_events", ["user_id", "day"])
    op.create_index("ix_usage_events_day_model", "usage_events", ["day", "model"])
    op.create_table(
        "audit_events",
        _id(),
        _timestamp("created_at"),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(36), nullable=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at", "id"])
    op.create_index("ix_audit_events_user_id_created_at", "audit_events", ["user_id", "created_at"])
    op.create_index("ix_audit_events_actor_id_created_at", "audit_events", ["actor_id", "created_at"])
    op.create_index("ix_audit_events_action_created_at", "audit_events", ["action", "created_at"])


def upgrade() -> None:
    _upgrade_users()
    _create_account_tables()
    _create_admin_tables()


def downgrade() -> None:
    for table in (
        "audit_events",
        "usage_events",
        "model_registry",
        "user_identities",
        "invitations",
        "roles",
    ):
        op.drop_table(table)
    op.drop_index("ix_users_created_at", table_name="users")
    op.execute("UPDATE users SET role = 'user' WHERE role NOT IN ('user', 'admin')")
    op.execute("UPDATE users SET password_hash = '!' WHERE password_hash IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_version")
        batch.alter_column("password_hash", existing_type=sa.String(255), nullable=False)
        batch.alter_column("role", existing_type=sa.String(64), type_=sa.String(16), existing_nullable=False)
        batch.create_check_constraint(op.f("ck_users_role"), "role IN ('user', 'admin')")
