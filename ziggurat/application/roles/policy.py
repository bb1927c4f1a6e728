"""What a role grants, as an immutable value, and the defaults of the built-in roles.

`policy_of` is the one function that turns a role name (and its row, if any)
into permissions: an unknown role grants nothing, so a user whose custom role
was removed by another replica fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ziggurat.application.auth.principal import ANY_MODEL, SCOPE_ADMIN, SCOPE_CHAT, Quota
from ziggurat.application.roles.models import Role

PERMISSIONS = frozenset({SCOPE_CHAT, SCOPE_ADMIN})
ROLE_USER = "user"
ROLE_ADMIN = "admin"


@dataclass(slots=True, frozen=True)
class RolePolicy:
    name: str
    permissions: frozenset[str]
    allowed_models: frozenset[str]
    quota: Quota = field(default=Quota())

    @property
    def is_admin(self) -> bool:
        return SCOPE_ADMIN in self.permissions


BUILTIN_ROLES: dict[str, RolePolicy] = {
    ROLE_USER: RolePolicy(ROLE_USER, frozenset({SCOPE_CHAT}), frozenset({ANY_MODEL})),
    ROLE_ADMIN: RolePolicy(ROLE_ADMIN, frozenset({SCOPE_CHAT, SCOPE_ADMIN}), frozenset({ANY_MODEL})),
}


def policy_of(name: str, row: Role | None) -> RolePolicy:
    if row is not None:
        return RolePolicy(
            name=row.name,
            permissions=frozenset(row.permissions) & PERMISSIONS,
            allowed_models=frozenset(row.allowed_models),
            quota=Quota(
                daily_tokens=row.daily_tokens,
                requests_per_minute=row.requests_per_minute,
                tokens_per_minute=row.tokens_per_minute,
                max_concurrent_streams=row.max_concurrent_streams,
                monthly_tokens=row.monthly_tokens,
            ),
        )
    return BUILTIN_ROLES.get(name, RolePolicy(name, frozenset(), frozenset()))
