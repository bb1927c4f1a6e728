"""The `users` and `invitations` tables.

Emails are stored lower-cased (the service normalises them), so the unique
constraint is also case-insensitive without a database-specific collation.
A user's `role` names a role (`roles/`): a built-in one (`user`, `admin`) or a
custom row of the `roles` table. It is not a foreign key, because the
built-in roles need no row; the role service checks names when they are
assigned, and an unknown role grants nothing.

`password_hash` is empty for accounts that only sign in through OIDC.
`session_version` goes up with a password change or "sign out everywhere";
access tokens carry the version they were issued under and older ones are
refused, so those actions end sessions at once instead of when the last
access token expires.

An invitation stores only the SHA-256 digest of its one-time token (a 256-bit
random secret, see `auth/models.py` for why a fast hash is right).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, text, true
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

EMAIL_MAX_LENGTH = 320
ROLE_NAME_MAX_LENGTH = 64
TOKEN_HASH_LENGTH = 64


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_created_at", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(ROLE_NAME_MAX_LENGTH), default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), index=True)
    role: Mapped[str] = mapped_column(String(ROLE_NAME_MAX_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), unique=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    accepted_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
