"""Which scopes a credential has: what it was issued with, cut down to what its role grants now.

An API key created by an admin loses `admin` when the user is demoted, without
touching the key. Interactive sessions are issued every scope and so always
have exactly what the role grants at the time of each request.
"""

from __future__ import annotations

from collections.abc import Iterable

from ziggurat.application.auth.principal import SCOPE_ADMIN, SCOPE_CHAT

ALL_SCOPES = frozenset({SCOPE_CHAT, SCOPE_ADMIN})


def effective_scopes(requested: Iterable[str], permissions: frozenset[str]) -> frozenset[str]:
    return frozenset(requested) & permissions
