"""Access tokens (signed JWTs) and opaque secrets (refresh tokens, API keys).

Access tokens are short-lived HS* JWTs with claims `sub`, `role`, `scopes`,
`iat`, `exp`, `jti`, `typ=access` and `sv` (the user's session version, see
`users/models.py`; tokens minted before it existed count as version 0). Verification names the one accepted
algorithm explicitly, so `alg: none` and tokens signed with another algorithm
or key are refused, and requires every claim, so a token minted for another
purpose (`typ`) cannot stand in for an access token.

Opaque secrets are 256 bits from `secrets`; only their SHA-256 digest is
stored (see `auth/models.py` for why a fast hash is right here).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from ziggurat.application.store.orm import utcnow
from ziggurat.errors import Unauthenticated

ACCESS_TOKEN_TYPE = "access"
_REQUIRED_CLAIMS = ["sub", "role", "scopes", "iat", "exp", "jti", "typ"]
# Tolerates small clock differences between the replicas that mint and check tokens.
_LEEWAY_S = 10


def new_secret() -> str:
    """A URL-safe random secret with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The hex SHA-256 of a secret: what the database stores and looks up."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(slots=True, frozen=True)
class AccessClaims:
    user_id: str
    role: str
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    session_version: int = 0


@dataclass(slots=True, frozen=True)
class IssuedToken:
    token: str
    expires_in_s: int


class AccessTokens:
    """Mints and checks access tokens with one symmetric key."""

    def __init__(self, *, secret_key: str, algorithm: str, ttl_s: int) -> None:
        self._secret_key = secret_key
        self._algorithm = algorithm
        self._ttl_s = ttl_s

    def issue(
        self, *, user_id: str, role: str, scopes: frozenset[str], session_version: int = 0
    ) -> IssuedToken:
        now = utcnow()
        claims = {
            "sub": user_id,
            "role": role,
            "scopes": sorted(scopes),
            "iat": now,
            "exp": now + timedelta(seconds=self._ttl_s),
            "jti": uuid.uuid4().hex,
            "typ": ACCESS_TOKEN_TYPE,
            "sv": session_version,
        }
        return IssuedToken(jwt.encode(claims, self._secret_key, algorithm=self._algorithm), self._ttl_s)

    def decode(self, token: str) -> AccessClaims:
        """The token's claims; raises `Unauthenticated` for any token we did not mint or that expired."""
        try:
            claims = jwt.decode(
                token,
                self._secret_key,
                algorithms=[self._algorithm],
                options={"require": _REQUIRED_CLAIMS},
                leeway=_LEEWAY_S,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The access token has expired; refresh it or sign in again.") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("The access token is invalid.") from exc
        scopes = claims["scopes"]
        session_version = claims.get("sv", 0)
        if (
            claims["typ"] != ACCESS_TOKEN_TYPE
            or not isinstance(claims["sub"], str)
            or not isinstance(claims["role"], str)
            or not isinstance(scopes, list)
            or not all(isinstance(scope, str) for scope in scopes)
            or not isinstance(session_version, int)
        ):
            raise Unauthenticated("The access token is invalid.")
        return AccessClaims(
            user_id=claims["sub"],
            role=claims["role"],
            scopes=frozenset(scopes),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(claims["exp"], tz=utcnow().tzinfo),
            session_version=session_version,
        )
