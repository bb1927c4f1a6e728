"""Pydantic API types for users and invitations. Password hashes and token digests never appear."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ziggurat.application.users.models import EMAIL_MAX_LENGTH, ROLE_NAME_MAX_LENGTH


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    role: str
    is_active: bool
    created_at: datetime


InvitationStatus = Literal["pending", "accepted", "revoked", "expired"]


class InvitationCreate(_Request):
    email: str = Field(max_length=EMAIL_MAX_LENGTH)
    role: str = Field(default="user", min_length=1, max_length=ROLE_NAME_MAX_LENGTH)
    expires_in_hours: int | None = Field(default=None, ge=1, le=24 * 365)


class InvitationOut(BaseModel):
    id: str
    email: str
    role: str
    status: InvitationStatus
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: str | None
    revoked_at: datetime | None


class InvitationCreated(InvitationOut):
    """Returned once, at creation: `token` is the one-time secret to register with."""

    token: str


class InvitationList(BaseModel):
    data: list[InvitationOut]
