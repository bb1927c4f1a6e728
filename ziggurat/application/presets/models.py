"""The `presets` table: a user's named parameter sets.

A conversation may reference a preset; its values apply to every message of
that conversation unless the conversation or the message overrides them. The
name is unique per user, so a preset can be picked by name in a UI.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

PRESET_NAME_MAX_LENGTH = 100


class Preset(Base):
    __tablename__ = "presets"
    __table_args__ = (
        # Also the index behind "a user's presets by name".
        UniqueConstraint("user_id", "name"),
        CheckConstraint("temperature >= 0 AND temperature <= 2", name="temperature"),
        CheckConstraint("max_tokens >= 1", name="max_tokens"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(PRESET_NAME_MAX_LENGTH))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
