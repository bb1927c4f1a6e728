"""SQL for refresh tokens and API keys. Gets its session in `__init__`; never commits.

State changes that race (rotating a refresh token, stamping an API key's last
use) are single conditional UPDATEs whose row count says who won, so they are
correct on both SQLite and PostgreSQL without row locks.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.auth.models import ApiKey, RefreshToken
from ziggurat.application.users.models import User


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token: RefreshToken) -> None:
        self._session.add(token)
        await self._session.flush()

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        return await self._session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))

    async def mark_rotated(self, token_id: str, *, replaced_by: str, now: datetime) -> bool:
        """Revoke a live token in favour of its successor; False if it was already revoked."""
        result = await self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now, replaced_by=replaced_by)
        )
        return _rowcount(result) == 1

    async def revoke_all_for_user(self, user_id: str, *, now: datetime) -> int:
        result = await self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _rowcount(result)

    async def revoke_family(self, family_id: str, *, now: datetime) -> int:
        result = await self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _rowcount(result)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, key: ApiKey) -> None:
        self._session.add(key)
        await self._session.flush()

    async def list_for_user(self, user_id: str) -> list[ApiKey]:
        rows = await self._session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
        return list(rows)

    async def get_for_user(self, user_id: str, key_id: str) -> ApiKey | None:
        return await self._session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        )

    async def get_with_user_by_hash(self, key_hash: str) -> tuple[ApiKey, User] | None:
        row = (
            await self._session.execute(
                select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == key_hash)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def mark_used(self, key_id: str, *, now: datetime, not_since: datetime) -> None:
        """Stamp `last_used_at`, unless another request already did after `not_since`."""
        await self._session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < not_since))
            .values(last_used_at=now)
        )


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount
