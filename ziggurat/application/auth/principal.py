"""Who is acting: the authenticated principal every user-data query takes.

Built by the authenticator from a JWT access token or an API key; passed to
every service call that reads or changes user data, so an ownership check
cannot be forgotten. It carries everything authorisation needs (the scopes
the credential has under the user's role *now*, the models that role may use,
its quotas), so checks never go back to the database: RBAC is decided here
and in `catalog/` (`can_use_model`), nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

UserId = NewType("UserId", str)

SCOPE_CHAT = "chat"
SCOPE_ADMIN = "admin"
ANY_MODEL = "*"


@dataclass(slots=True, frozen=True)
class Quota:
    """Limits the role sets for each of its users; None leaves them to the operator's defaults
    (`ZIGGURAT_LIMITS__*`, unlimited unless set). Enforced by the service layer's limiters."""

    daily_tokens: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_streams: int | None = None
    monthly_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class Principal:
    user_id: UserId
    role: str
    scopes: frozenset[str]
    api_key_id: str | None = None
    allowed_models: frozenset[str] = field(default=frozenset({ANY_MODEL}))
    quota: Quota = field(default=Quota())

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def may_use_model(self, name: str) -> bool:
        """What the role says about this model name (the model registry may narrow it further)."""
        return self.has_scope(SCOPE_CHAT) and (
            ANY_MODEL in self.allowed_models or name in self.allowed_models
        )

    @property
    def is_admin(self) -> bool:
        return SCOPE_ADMIN in self.scopes

    @property
    def is_interactive(self) -> bool:
        """Signed in (a JWT from a password or OIDC sign-in), not a program holding an API key."""
        return self.api_key_id is None


SYSTEM = Principal(user_id=UserId("system"), role="admin", scopes=frozenset({SCOPE_ADMIN}))
"""The platform itself, for maintenance it runs on its own (purges, `ziggurat` admin commands)."""
