"""Which scopes each role grants.

A principal's scopes are always cut down to what its user's role grants *now*:
an API key created by an admin loses `admin` when the user is demoted, without
touching the key.
"""

from __future__ import annotations

from collections.abc import Iterable

from ziggurat.application.auth.principal import SCOPE_ADMIN, SCOPE_CHAT

ALL_SCOPES = frozenset({SCOPE_CHAT, SCOPE_ADMIN})

_ROLE_SCOPES: dict[str, frozenset[str]] = {
    "user": frozenset({SCOPE_CHAT}),
    "admin": frozenset({SCOPE_CHAT, SCOPE_ADMIN}),
}


def scopes_for_role(role: str) -> frozenset[str]:
    """The scopes a role grants; an unknown role grants none."""
    return _ROLE_SCOPES.get(role, frozenset())


def effective_scopes(requested: Iterable[str], role: str) -> frozenset[str]:
    return frozenset(requested) & scopes_for_role(role)
