"""Who is acting: the authenticated principal every user-data query takes.

Built by the authenticator from a JWT access token or an API key; passed to
every service call that reads or changes user data, so an ownership check
cannot be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

UserId = NewType("UserId", str)

SCOPE_CHAT = "chat"
SCOPE_ADMIN = "admin"


@dataclass(slots=True, frozen=True)
class Principal:
    user_id: UserId
    role: str
    scopes: frozenset[str]
    api_key_id: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and SCOPE_ADMIN in self.scopes
