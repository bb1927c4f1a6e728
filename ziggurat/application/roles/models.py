"""The `roles` table: custom roles, and changes made to the built-in ones.

The built-in roles (`user`, `admin`) need no row: their defaults live in
`policy.py`. A row with a built-in name overrides those defaults (for example
a daily token quota for every ordinary user).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import Base, UtcDateTime, utcnow
from ziggurat.application.users.models import ROLE_NAME_MAX_LENGTH


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(ROLE_NAME_MAX_LENGTH), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    permissions: Mapped[list[str]] = mapped_column(JSON)
    allowed_models: Mapped[list[str]] = mapped_column(JSON)
    daily_tokens: Mapped[int | None] = mapped_column(Integer)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_streams: Mapped[int | None] = mapped_column(Integer)
    monthly_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
