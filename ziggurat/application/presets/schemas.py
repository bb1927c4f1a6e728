"""Pydantic API types for presets."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ziggurat.application.conversations.schemas import MAX_REPLY_TOKENS, MAX_SYSTEM_PROMPT_CHARS
from ziggurat.application.presets.models import PRESET_NAME_MAX_LENGTH


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PresetUpdate(_Request):
    """Fields left out keep their value; `null` clears an optional one."""

    name: str | None = Field(default=None, min_length=1, max_length=PRESET_NAME_MAX_LENGTH)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    model: str | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_REPLY_TOKENS)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, name: str | None) -> str | None:
        if name is not None and not name.strip():
            raise ValueError("the name is empty")
        return name.strip() if name is not None else None


class PresetCreate(PresetUpdate):
    name: str = Field(min_length=1, max_length=PRESET_NAME_MAX_LENGTH)


class PresetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    system_prompt: str | None
    model: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime


class PresetList(BaseModel):
    data: list[PresetOut]
