"""The `usage_events` table: one row per finished generation.

`day` is the UTC date of the event, stored so reports group by a plain column
(no time-zone arithmetic that differs between SQLite and PostgreSQL) and the
indexes serve the two hot reports: one user's days, and all users per day.
Rows go with their user when the account is deleted.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_user_id_day", "user_id", "day"),
        Index("ix_usage_events_day_model", "day", "model"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    model: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
