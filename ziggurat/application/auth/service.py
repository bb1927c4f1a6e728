"""Password sign-up and sign-in, password changes, and signing out.

Sign-in is guarded by a `LoginThrottle` (see `lockout.py`): the lock is
checked before the password, failures are counted per account and per client
IP, and the audit log gets every success and failure, plus one `login.locked`
event when a lock starts (not one per refused attempt, so a flood of guesses
cannot flood the database). Changing the password or signing out everywhere
ends every session of the user (`sessions.py`) and starts a new one for the
caller.
"""

from __future__ import annotations

from ziggurat.application.audit.log import AuditLog, AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.lockout import LoginThrottle, ThrottleKey
from ziggurat.application.auth.passwords import PasswordHasher, check_password_policy
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.schemas import Registration, TokenPair
from ziggurat.application.auth.sessions import SessionService
from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.application.users.schemas import UserOut
from ziggurat.application.users.service import UserService, normalize_email
from ziggurat.config import AuthSettings
from ziggurat.errors import Forbidden, InvalidRequest, NotFound, RateLimited, Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_BAD_CREDENTIALS = "Incorrect email or password."
_LOCKED = "Too many failed sign-in attempts; wait before trying again."


class AuthService:
    def __init__(
        self,
        *,
        database: Database,
        users: UserService,
        passwords: PasswordHasher,
        sessions: SessionService,
        throttle: LoginThrottle,
        settings: AuthSettings,
    ) -> None:
        self._database = database
        self._users = users
        self._passwords = passwords
        self._sessions = sessions
        self._throttle = throttle
        self._settings = settings
        self._audit = AuditLog(database=database)

    async def register(self, email: str, password: str, *, invitation: str | None = None) -> Registration:
        """Create an account and sign it in."""
        user = await self._users.register(email, password, invitation=invitation)
        return Registration(user=UserOut.model_validate(user), tokens=await self._sessions.start(user))

    async def login(self, email: str, password: str, *, client_ip: str | None = None) -> TokenPair:
        try:
            email = normalize_email(email)
        except InvalidRequest:
            email = ""
        keys = self._throttle_keys(email, client_ip)
        retry_after = await self._throttle.retry_after(keys)
        if retry_after is not None:
            raise RateLimited(_LOCKED, retry_after_s=retry_after)
        async with self._database.session() as session:
            user = await UserRepository(session).get_by_email(email) if email else None
        is_valid = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None or not is_valid:
            await self._fail(keys, user, client_ip)
            raise Unauthenticated(_BAD_CREDENTIALS)
        if not user.is_active:
            raise Unauthenticated("This account is disabled.")
        await self._throttle.reset(keys[0])
        async with self._database.session() as session:
            tokens = await self._sessions.start(user, session)
            AuditRepository(session).add(
                audit_event(
                    AuditAction.LOGIN_SUCCEEDED,
                    actor_id=user.id,
                    user_id=user.id,
                    ip=client_ip,
                    details={"method": "password"},
                )
            )
            await session.commit()
        log.info("user_signed_in", user_id=user.id)
        return tokens

    async def refresh(self, refresh_token: str) -> TokenPair:
        return await self._sessions.refresh(refresh_token)

    async def logout(self, refresh_token: str) -> None:
        await self._sessions.logout(refresh_token)

    async def change_password(
        self, principal: Principal, current_password: str, new_password: str, *, client_ip: str | None = None
    ) -> TokenPair:
        """Set a new password, end every session (this one too), and return a fresh session."""
        _require_interactive(principal)
        async with self._database.session() as session:
            user = await UserRepository(session).get(principal.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("This account is disabled or no longer exists.")
        if not user.password_hash:
            raise InvalidRequest("This account signs in through single sign-on and has no password.")
        keys = self._throttle_keys(user.email, client_ip)
        retry_after = await self._throttle.retry_after(keys)
        if retry_after is not None:
            raise RateLimited(_LOCKED, retry_after_s=retry_after)
        if not await self._passwords.verify(user.password_hash, current_password):
            await self._fail(keys, user, client_ip)
            raise InvalidRequest("The current password is incorrect.", param="current_password")
        check_password_policy(new_password, email=user.email)
        new_hash = await self._passwords.hash(new_password)
        async with self._database.session() as session:
            user = await UserRepository(session).get(principal.user_id)
            if user is None:
                raise NotFound("This account no longer exists.")
            user.password_hash = new_hash
            await self._sessions.end_all(session, user)
            tokens = await self._sessions.start(user, session)
            AuditRepository(session).add(
                audit_event(AuditAction.PASSWORD_CHANGED, actor_id=user.id, user_id=user.id, ip=client_ip)
            )
            await session.commit()
        self._sessions.evict(user.id)
        await self._throttle.reset(keys[0])
        return tokens

    async def logout_all(self, principal: Principal) -> None:
        """Sign out of every session: refresh tokens revoked, access tokens refused from now on."""
        _require_interactive(principal)
        async with self._database.session() as session:
            user = await UserRepository(session).get(principal.user_id)
            if user is None:
                raise NotFound("This account no longer exists.")
            await self._sessions.end_all(session, user)
            AuditRepository(session).add(
                audit_event(AuditAction.SESSIONS_REVOKED, actor_id=user.id, user_id=user.id)
            )
            await session.commit()
        self._sessions.evict(user.id)

    def _throttle_keys(self, email: str, client_ip: str | None) -> list[ThrottleKey]:
        keys = [ThrottleKey(f"account:{email}", self._settings.lockout_max_failures)]
        if client_ip:
            keys.append(ThrottleKey(f"ip:{client_ip}", self._settings.lockout_ip_max_failures))
        return keys

    async def _fail(self, keys: list[ThrottleKey], user: User | None, client_ip: str | None) -> None:
        await self._throttle.record_failure(keys)
        user_id = user.id if user else None
        await self._audit.record(AuditAction.LOGIN_FAILED, user_id=user_id, ip=client_ip)
        if await self._throttle.retry_after(keys) is not None:
            log.warning("login_locked", user_id=user_id)
            await self._audit.record(AuditAction.LOGIN_LOCKED, user_id=user_id, ip=client_ip)


def _require_interactive(principal: Principal) -> None:
    if not principal.is_interactive:
        raise Forbidden("Sign in to do this; API keys cannot manage sessions or passwords.")
