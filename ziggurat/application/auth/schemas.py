"""Pydantic API types for sign-up, sign-in, token refresh and API keys.

Length limits here only bound the input; the password policy and email
normalisation are service rules (`users/service.py`, `auth/passwords.py`), so
they hold for every caller, not just HTTP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ziggurat.application.users.schemas import UserOut

Scope = Literal["chat", "admin"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Request):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class RegistrationRequest(Credentials):
    invitation: str | None = Field(
        default=None, min_length=1, max_length=256, description="One-time token of an invitation."
    )


class PasswordChange(_Request):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class OidcProviderOut(BaseModel):
    name: str
    login_url: str


class AuthProviders(BaseModel):
    """How this server lets people sign in, for a sign-in page."""

    password: bool = True
    registration_open: bool
    oidc: OidcProviderOut | None


class RefreshRequest(_Request):
    refresh_token: str = Field(min_length=1, max_length=256)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class Registration(BaseModel):
    user: UserOut
    tokens: TokenPair


class ApiKeyCreate(_Request):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default=["chat"], min_length=1)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    """An API key as listed: never the secret, only the prefix that helps recognise it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """Returned once, at creation: `key` is the secret and cannot be shown again."""

    key: str


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
