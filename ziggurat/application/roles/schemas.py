"""Pydantic API types for roles."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ziggurat.application.store.orm import DATABASE_INT_MAX
from ziggurat.application.users.models import ROLE_NAME_MAX_LENGTH

Permission = Literal["chat", "admin"]
ROLE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
ModelName = Field(min_length=1, max_length=200)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleCreate(_Request):
    name: str = Field(min_length=1, max_length=ROLE_NAME_MAX_LENGTH, pattern=ROLE_NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    permissions: list[Permission] = Field(default=["chat"], max_length=8)
    allowed_models: list[str] = Field(
        default=["*"], max_length=1000, description="Model names this role may use; `*` for every model."
    )
    daily_tokens: int | None = Field(default=None, ge=0, le=DATABASE_INT_MAX)
    requests_per_minute: int | None = Field(default=None, ge=0, le=DATABASE_INT_MAX)


class RoleUpdate(_Request):
    description: str | None = Field(default=None, max_length=500)
    permissions: list[Permission] | None = Field(default=None, max_length=8)
    allowed_models: list[str] | None = Field(default=None, max_length=1000)
    daily_tokens: int | None = Field(default=None, ge=0, le=DATABASE_INT_MAX)
    requests_per_minute: int | None = Field(default=None, ge=0, le=DATABASE_INT_MAX)


class RoleOut(BaseModel):
    name: str
    description: str
    permissions: list[str]
    allowed_models: list[str]
    daily_tokens: int | None
    requests_per_minute: int | None
    is_builtin: bool
    created_at: datetime | None
    updated_at: datetime | None


class RoleList(BaseModel):
    data: list[RoleOut]
