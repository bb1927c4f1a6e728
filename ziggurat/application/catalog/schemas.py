"""Pydantic API types for the model registry."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ziggurat.application.catalog.models import MODEL_NAME_MAX_LENGTH
from ziggurat.application.store.orm import DATABASE_INT_MAX


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntryCreate(_Request):
    name: str = Field(min_length=1, max_length=MODEL_NAME_MAX_LENGTH)
    engine: str | None = Field(default=None, max_length=64)
    adapter: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=500)
    context_length: int | None = Field(default=None, ge=1, le=DATABASE_INT_MAX)
    default_parameters: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, max_length=32
    )
    allowed_roles: list[str] | None = Field(
        default=None, max_length=100, description="Roles that may use the model; null for every role."
    )
    enabled: bool = True


class ModelEntryUpdate(_Request):
    engine: str | None = Field(default=None, max_length=64)
    adapter: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=500)
    context_length: int | None = Field(default=None, ge=1, le=DATABASE_INT_MAX)
    default_parameters: dict[str, float | int | str | bool | None] | None = Field(default=None, max_length=32)
    allowed_roles: list[str] | None = Field(default=None, max_length=100)
    enabled: bool | None = None


class ModelEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    engine: str | None
    adapter: str | None
    description: str
    context_length: int | None
    default_parameters: dict[str, object]
    allowed_roles: list[str] | None
    enabled: bool
    is_served: bool = False
    created_at: datetime
    updated_at: datetime


class ModelEntryList(BaseModel):
    data: list[ModelEntryOut]
