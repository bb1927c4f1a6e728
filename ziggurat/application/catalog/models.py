"""The `model_registry` table: metadata and role visibility for model names.

The models that exist are the ones `GenerationService` serves; a registry row
only describes one (context length, default parameters, engine and adapter
for operators) and narrows who may use it (`allowed_roles`, `enabled`). A
served model with no row is open to every role whose own `allowed_models`
admit it. A row for a model that is not served changes nothing until it is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column

from ziggurat.application.store.orm import ID_LENGTH, Base, UtcDateTime, new_id, utcnow

MODEL_NAME_MAX_LENGTH = 200


class ModelEntry(Base):
    __tablename__ = "model_registry"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(MODEL_NAME_MAX_LENGTH), unique=True)
    engine: Mapped[str | None] = mapped_column(String(64))
    adapter: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")
    context_length: Mapped[int | None] = mapped_column(Integer)
    default_parameters: Mapped[dict[str, object]] = mapped_column(JSON)
    allowed_roles: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
