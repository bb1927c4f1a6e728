"""Pydantic API types for reading the audit log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    action: str
    actor_id: str | None
    user_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, object]


class AuditPage(BaseModel):
    data: list[AuditEventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
