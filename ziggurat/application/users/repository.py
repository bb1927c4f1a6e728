"""SQL for the `users` table. Gets its session in `__init__`; never commits."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.users.models import User

# Any fixed 64-bit number; only registrations take it.
_REGISTRATION_LOCK_KEY = 0x7A1_66_00_0002


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        return await self._session.scalar(select(User).where(User.email == email))

    async def count(self) -> int:
        return await self._session.scalar(select(func.count()).select_from(User)) or 0

    async def add(self, user: User) -> None:
        self._session.add(user)
        await self._session.flush()

    async def serialize_registrations(self) -> None:
        """Make concurrent registrations take turns until commit, so only one can be the first user.

        PostgreSQL needs an explicit lock; SQLite already runs one writer at a time.
        """
        if self._session.get_bind().dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REGISTRATION_LOCK_KEY}
            )
