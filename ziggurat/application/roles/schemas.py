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
QuotaField = Field(
    default=None,
    ge=0,
    le=DATABASE_INT_MAX,
    description="Per user of the role; null: the server's default (ZIGGURAT_LIMITS__*), 0: none allowed.",
)
QUOTA_FIELDS = (
    "daily_tokens",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_streams",
    "monthly_tokens",
)
"""The role's limits: each may be set back to null (the default) with PATCH."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleCreate(_Request):
    name: str = Field(min_length=1, max_length=ROLE_NAME_MAX_LENGTH, pattern=ROLE_NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    permissions: list[Permission] = Field(default=["chat"], max_length=8)
    allowed_models: list[str] = Field(
        default=["*"], max_length=1000, description="Model names this role may use; `*` for every model."
    )
    daily_tokens: int | None = QuotaField
    requests_per_minute: int | None = QuotaField
    tokens_per_minute: int | None = QuotaField
    max_concurrent_streams: int | None = QuotaField
    monthly_tokens: int | None = QuotaField


class RoleUpdate(_Request):
    description: str | None = Field(default=None, max_length=500)
    permissions: list[Permission] | None = Field(default=None, max_length=8)
    allowed_models: list[str] | None = Field(default=None, max_length=1000)
    daily_tokens: int | None = QuotaField
    requests_per_minute: int | None = QuotaField
    tokens_per_minute: int | None = QuotaField
    max_concurrent_streams: int | None = QuotaField
    monthly_tokens: int | None = QuotaField


class RoleOut(BaseModel):
    name: str
    description: str
    permissions: list[str]
    allowed_models: list[str]
    daily_tokens: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent_streams: int | None
    monthly_tokens: int | None
    is_builtin: bool
    created_at: datetime | None
    updated_at: datetime | None


class RoleList(BaseModel):
    data: list[RoleOut]
