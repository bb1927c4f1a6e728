"""User accounts: registration rules and lookup.

Rules: emails are trimmed and lower-cased before they are stored or compared;
the first account ever created becomes an admin, so a fresh install can be
administered without a separate bootstrap step; and once that account exists,
new sign-ups are accepted only while `allow_registration` is on.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError

from ziggurat.application.auth.passwords import PasswordHasher, check_password_policy
from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.application.users.schemas import UserOut
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

# Deliberately loose: the only real check of an address is mail arriving there.
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    normalized = email.strip().lower()
    if len(normalized) > 320 or not _EMAIL_PATTERN.fullmatch(normalized):
        raise InvalidRequest("Enter a valid email address.", param="email")
    return normalized


class UserService:
    def __init__(self, *, database: Database, passwords: PasswordHasher, allow_registration: bool) -> None:
        self._database = database
        self._passwords = passwords
        self._allow_registration = allow_registration

    async def register(self, email: str, password: str) -> User:
        """Create an account; the very first one is an admin. Raises `Conflict` for a taken email."""
        email = normalize_email(email)
        check_password_policy(password)
        password_hash = await self._passwords.hash(password)
        async with self._database.session() as session:
            users = UserRepository(session)
            await users.serialize_registrations()
            is_first = await users.count() == 0
            if not is_first and not self._allow_registration:
                raise Forbidden("Registration is closed on this server; ask an administrator for an account.")
            if await users.get_by_email(email) is not None:
                raise Conflict("An account with this email already exists.", param="email")
            user = User(email=email, password_hash=password_hash, role="admin" if is_first else "user")
            try:
                await users.add(user)
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("An account with this email already exists.", param="email") from exc
        log.info("user_registered", user_id=user.id, role=user.role)
        return user

    async def me(self, principal: Principal) -> UserOut:
        async with self._database.session() as session:
            user = await UserRepository(session).get(principal.user_id)
        if user is None:
            raise NotFound("This account no longer exists.")
        if not user.is_active:
            raise Unauthenticated("This account is disabled.")
        return UserOut.model_validate(user)
