"""SQL for the `users` and `invitations` tables. Gets its session in `__init__`; never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.users.models import Invitation, User

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

    async def delete(self, user: User) -> None:
        await self._session.delete(user)
        await self._session.flush()

    async def bump_session_version(self, user_id: str) -> None:
        await self._session.execute(
            update(User).where(User.id == user_id).values(session_version=User.session_version + 1)
        )

    async def search(
        self, *, email_contains: str | None, limit: int, before: tuple[datetime, str] | None
    ) -> list[User]:
        """Users newest first, optionally those whose email contains a (lower-case) fragment."""
        query = select(User)
        if email_contains:
            pattern = "%" + _escape_like(email_contains) + "%"
            query = query.where(User.email.like(pattern, escape="\\"))
        if before is not None:
            at, user_id = before
            query = query.where(or_(User.created_at < at, and_(User.created_at == at, User.id < user_id)))
        rows = await self._session.scalars(
            query.order_by(User.created_at.desc(), User.id.desc()).limit(limit)
        )
        return list(rows)

    async def serialize_registrations(self) -> None:
        """Make concurrent registrations take turns until commit, so only one can be the first user.

        PostgreSQL needs an explicit lock; SQLite already runs one writer at a time.
        """
        if self._session.get_bind().dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REGISTRATION_LOCK_KEY}
            )


class InvitationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, invitation: Invitation) -> None:
        self._session.add(invitation)
        await self._session.flush()

    async def get(self, invitation_id: str) -> Invitation | None:
        return await self._session.get(Invitation, invitation_id)

    async def get_by_hash(self, token_hash: str) -> Invitation | None:
        return await self._session.scalar(select(Invitation).where(Invitation.token_hash == token_hash))

    async def pending_for_email(self, email: str, *, now: datetime) -> Invitation | None:
        return await self._session.scalar(
            select(Invitation)
            .where(
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > now,
            )
            .order_by(Invitation.created_at.desc())
            .limit(1)
        )

    async def list_recent(self, *, limit: int) -> list[Invitation]:
        rows = await self._session.scalars(
            select(Invitation).order_by(Invitation.created_at.desc(), Invitation.id.desc()).limit(limit)
        )
        return list(rows)

    async def mark_accepted(self, invitation_id: str, *, user_id: str, now: datetime) -> bool:
        """Spend a pending invitation; False if it was used, revoked or expired meanwhile."""
        result = await self._session.execute(
            update(Invitation)
            .where(
                Invitation.id == invitation_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > now,
            )
            .values(accepted_at=now, accepted_by=user_id)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1


def _escape_like(fragment: str) -> str:
    return fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
