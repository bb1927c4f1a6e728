"""Turns an `Authorization: Bearer` credential into a `Principal`, or refuses it.

Two kinds of bearer are accepted: a JWT access token (browsers, after sign-in)
and an API key (`zk-...`, programs). Both are checked against the user's
current row and role, so disabling an account, signing out everywhere or
changing a role takes effect without waiting for access tokens to expire.
The result of a check is kept in a `CredentialCache` for a few seconds, so a
busy client costs two primary-key lookups per cache period, not per request;
changes made in this process evict it at once, other replicas see them within
the cache TTL. Scopes are cut down to what the user's role grants now.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.auth.api_keys import is_api_key
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.principal import Principal, UserId
from ziggurat.application.auth.repository import ApiKeyRepository
from ziggurat.application.auth.scopes import effective_scopes
from ziggurat.application.auth.tokens import AccessTokens, digest
from ziggurat.application.roles.models import Role
from ziggurat.application.roles.policy import policy_of
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import utcnow
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.errors import Unauthenticated
from ziggurat.single_flight import SingleFlight

# `last_used_at` is for humans reviewing their keys; minute precision spares a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def principal_for(
    session: AsyncSession, user: User, scopes: Iterable[str], *, api_key_id: str | None = None
) -> Principal:
    """The principal of `user` holding a credential issued with `scopes`, under the user's role now."""
    policy = policy_of(user.role, await session.get(Role, user.role))
    return Principal(
        user_id=UserId(user.id),
        role=user.role,
        scopes=effective_scopes(scopes, policy.permissions),
        api_key_id=api_key_id,
        allowed_models=policy.allowed_models,
        quota=policy.quota,
    )


class Authenticator:
    def __init__(self, *, database: Database, access_tokens: AccessTokens, cache: CredentialCache) -> None:
        self._database = database
        self._access_tokens = access_tokens
        self._cache = cache
        self._checking: SingleFlight[str, tuple[Principal, datetime | None]] = SingleFlight()

    async def authenticate(self, bearer: str) -> Principal:
        if not bearer:
            raise Unauthenticated("Missing bearer token in the Authorization header.")
        if is_api_key(bearer):
            key_digest = digest(bearer)
            cached = self._cache.get(key_digest)
            if cached is not None:
                return cached
            # Requests on one key that miss the cache together (at its expiry) share one check.
            principal, expires_at = await self._checking.run(
                key_digest, partial(self._authenticate_api_key, bearer)
            )
            self._cache.put(key_digest, principal, not_after=_monotonic_deadline(expires_at))
            return principal
        return await self._authenticate_access_token(bearer)

    async def _authenticate_access_token(self, token: str) -> Principal:
        # Decoding is always done (it checks signature and expiry); only the user-row check is cached.
        claims = self._access_tokens.decode(token)
        token_digest = digest(token)
        cached = self._cache.get(token_digest)
        if cached is not None:
            return cached
        async with self._database.session() as session:
            user = await UserRepository(session).get(claims.user_id)
            if user is None or not user.is_active:
                raise Unauthenticated("This account is disabled or no longer exists.")
            if claims.session_version != user.session_version:
                raise Unauthenticated("This session was signed out; sign in again.")
            principal = await principal_for(session, user, claims.scopes)
        self._cache.put(token_digest, principal)
        return principal

    async def _authenticate_api_key(self, secret: str) -> tuple[Principal, datetime | None]:
        now = utcnow()
        async with self._database.session() as session:
            keys = ApiKeyRepository(session)
            found = await keys.get_with_user_by_hash(digest(secret))
            if found is None:
                raise Unauthenticated("Incorrect API key provided.")
            key, user = found
            if key.revoked_at is not None:
                raise Unauthenticated("This API key has been revoked.")
            if key.expires_at is not None and key.expires_at <= now:
                raise Unauthenticated("This API key has expired.")
            if not user.is_active:
                raise Unauthenticated("This account is disabled.")
            principal = await principal_for(session, user, key.scopes, api_key_id=key.id)
            if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
                await keys.mark_used(key.id, now=now, not_since=now - LAST_USED_RESOLUTION)
                await session.commit()
        return principal, key.expires_at


def _monotonic_deadline(expires_at: datetime | None) -> float | None:
    """A wall-clock expiry as a point on the monotonic clock the cache uses."""
    if expires_at is None:
        return None
    return time.monotonic() + (expires_at - utcnow()).total_seconds()
