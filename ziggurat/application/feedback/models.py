"""The `feedback` table: what a user thought of one assistant answer.

One row per answer (`UNIQUE(message_id)`): only the conversation's owner may
rate its answers, so a second rating replaces the first instead of piling up.
Any combination of thumb, 1–5 rating, comment and corrected answer is allowed;
the service requires at least one. Rows go with their message (and so with
their conversation when it is purged).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.conversations.models import Message
from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

Thumb = Literal["up", "down"]


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("message_id"),
        # The admin review list and the export walk all feedback by time.
        Index("ix_feedback_created_at", "created_at", "id"),
        # A user's own feedback, newest first.
        Index("ix_feedback_user_id_created_at", "user_id", "created_at", "id"),
        CheckConstraint("thumb IN ('up', 'down')", name="thumb"),
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey(Message.id, ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    thumb: Mapped[str | None] = mapped_column(String(8))
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    corrected_answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
