"""The `users` table.

Emails are stored lower-cased (the service normalises them), so the unique
constraint is also case-insensitive without a database-specific collation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import Boolean, CheckConstraint, String, true
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

UserRole = Literal["user", "admin"]
USER_ROLES: tuple[UserRole, ...] = ("user", "admin")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('user', 'admin')", name="role"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
