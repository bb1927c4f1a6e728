"""Pydantic API types for user administration."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ziggurat.application.users.models import ROLE_NAME_MAX_LENGTH
from ziggurat.application.users.schemas import UserOut


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(default=None, min_length=1, max_length=ROLE_NAME_MAX_LENGTH)
    is_active: bool | None = None


class UserPage(BaseModel):
    data: list[UserOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class UserExport(BaseModel):
    """Everything stored about one user: the profile and their rows in every table that belongs to them."""

    exported_at: datetime
    user: UserOut
    tables: dict[str, list[dict[str, object]]]
