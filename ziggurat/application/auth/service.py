"""Sessions: sign-up, sign-in, refresh-token rotation and sign-out.

A session is a family of refresh tokens. Each refresh spends the presented
token and returns a new pair from the same family. Presenting a token that was
already spent means two parties hold it (one of them likely a thief), so the
whole family is revoked and both must sign in again; this is also what a
second, racing refresh of the same token gets.
"""

from __future__ import annotations

from datetime import timedelta

from ziggurat.application.auth.models import RefreshToken
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.repository import RefreshTokenRepository
from ziggurat.application.auth.schemas import Registration, TokenPair
from ziggurat.application.auth.scopes import scopes_for_role
from ziggurat.application.auth.tokens import AccessTokens, digest, new_secret
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.application.users.schemas import UserOut
from ziggurat.application.users.service import UserService, normalize_email
from ziggurat.errors import InvalidRequest, Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_BAD_CREDENTIALS = "Incorrect email or password."
_BAD_REFRESH = "The refresh token is invalid or expired; sign in again."


class AuthService:
    def __init__(
        self,
        *,
        database: Database,
        users: UserService,
        passwords: PasswordHasher,
        access_tokens: AccessTokens,
        refresh_token_ttl_s: int,
    ) -> None:
        self._database = database
        self._users = users
        self._passwords = passwords
        self._access_tokens = access_tokens
        self._refresh_ttl = timedelta(seconds=refresh_token_ttl_s)

    async def register(self, email: str, password: str) -> Registration:
        """Create an account and sign it in."""
        user = await self._users.register(email, password)
        return Registration(user=UserOut.model_validate(user), tokens=await self._start_session(user))

    async def login(self, email: str, password: str) -> TokenPair:
        try:
            email = normalize_email(email)
        except InvalidRequest:
            email = ""
        async with self._database.session() as session:
            user = await UserRepository(session).get_by_email(email) if email else None
        is_valid = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None or not is_valid:
            raise Unauthenticated(_BAD_CREDENTIALS)
        if not user.is_active:
            raise Unauthenticated("This account is disabled.")
        log.info("user_signed_in", user_id=user.id)
        return await self._start_session(user)

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

    async def _start_session(self, user: User) -> TokenPair:
        secret, token = self._new_refresh_token(user.id, family_id=new_id())
        async with self._database.session() as session:
            await RefreshTokenRepository(session).add(token)
            await session.commit()
        return self._pair(user, secret)

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
        access = self._access_tokens.issue(user_id=user.id, role=user.role, scopes=scopes_for_role(user.role))
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh_secret,
            expires_in=access.expires_in_s,
            refresh_expires_in=int(self._refresh_ttl.total_seconds()),
        )
