"""Sessions: minting token pairs, refresh-token rotation with reuse detection, and ending sessions.

A session is a family of refresh tokens. Each refresh spends the presented
token and returns a new pair from the same family. Presenting a token that was
already spent means two parties hold it (one of them likely a thief), so the
whole family is revoked and both must sign in again; this is also what a
second, racing refresh of the same token gets. Ending every session of a user
(password change, "sign out everywhere", disabling the account) revokes all
its refresh tokens and bumps its session version, which kills its access
tokens too (see `users/models.py`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.models import RefreshToken
from ziggurat.application.auth.repository import RefreshTokenRepository
from ziggurat.application.auth.schemas import TokenPair
from ziggurat.application.auth.scopes import ALL_SCOPES
from ziggurat.application.auth.tokens import AccessTokens, digest, new_secret
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.errors import Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_BAD_REFRESH = "The refresh token is invalid or expired; sign in again."


class SessionService:
    def __init__(
        self,
        *,
        database: Database,
        access_tokens: AccessTokens,
        credential_cache: CredentialCache,
        refresh_token_ttl_s: int,
    ) -> None:
        self._database = database
        self._access_tokens = access_tokens
        self._credential_cache = credential_cache
        self._refresh_ttl = timedelta(seconds=refresh_token_ttl_s)

    async def start(self, user: User, session: AsyncSession | None = None) -> TokenPair:
        """A new session for `user`; inside `session` when given (the caller commits), else committed."""
        secret, token = self._new_refresh_token(user.id, family_id=new_id())
        if session is not None:
            await RefreshTokenRepository(session).add(token)
        else:
            async with self._database.session() as own:
                await RefreshTokenRepository(own).add(token)
                await own.commit()
        return self._pair(user, secret)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token for a new pair; a spent token revokes its whole family."""
        now = utcnow()
        async with self._database.session() as session:
            tokens = RefreshTokenRepository(session)
            current = await tokens.get_by_hash(digest(refresh_token))
            if current is None or current.expires_at <= now:
                raise Unauthenticated(_BAD_REFRESH)
            family_id = current.family_id
            user = await UserRepository(session).get(current.user_id)
            if user is None or not user.is_active:
                raise Unauthenticated(_BAD_REFRESH)
            secret, successor = self._new_refresh_token(user.id, family_id=family_id)
            await tokens.add(successor)
            if current.revoked_at is not None or not await tokens.mark_rotated(
                current.id, replaced_by=successor.id, now=now
            ):
                # Rolling back drops the successor; the revocation is its own transaction.
                await session.rollback()
                revoked = await tokens.revoke_family(family_id, now=now)
                await session.commit()
                log.warning("refresh_token_reused", family_id=family_id, revoked_count=revoked)
                raise Unauthenticated(
                    "This refresh token was already used, so this session was signed out for safety; "
                    "sign in again."
                )
            await session.commit()
        return self._pair(user, secret)

    async def logout(self, refresh_token: str) -> None:
        """End the session the refresh token belongs to. Unknown or spent tokens are ignored."""
        async with self._database.session() as session:
            tokens = RefreshTokenRepository(session)
            current = await tokens.get_by_hash(digest(refresh_token))
            if current is not None:
                await tokens.revoke_family(current.family_id, now=utcnow())
                await session.commit()

    async def end_all(self, session: AsyncSession, user: User) -> None:
        """Revoke every session of `user` in the caller's transaction (it commits, then calls `evict`)."""
        await RefreshTokenRepository(session).revoke_all_for_user(user.id, now=utcnow())
        await UserRepository(session).bump_session_version(user.id)
        await session.refresh(user, ["session_version"])

    def evict(self, user_id: str) -> None:
        """Drop cached credential checks of a user whose sessions or standing changed."""
        self._credential_cache.evict_user(user_id)

    def _new_refresh_token(self, user_id: str, *, family_id: str) -> tuple[str, RefreshToken]:
        secret = new_secret()
        token = RefreshToken(
            id=new_id(),
            user_id=user_id,
            token_hash=digest(secret),
            family_id=family_id,
            expires_at=utcnow() + self._refresh_ttl,
        )
        return secret, token

    def _pair(self, user: User, refresh_secret: str) -> TokenPair:
        # Every scope: the role decides at each request what the session may do (`auth/scopes.py`).
        access = self._access_tokens.issue(
            user_id=user.id, role=user.role, scopes=ALL_SCOPES, session_version=user.session_version
        )
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh_secret,
            expires_in=access.expires_in_s,
            refresh_expires_in=int(self._refresh_ttl.total_seconds()),
        )
