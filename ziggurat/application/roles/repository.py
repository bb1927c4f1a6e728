"""SQL for the `roles` table (and counting who holds a role). Never commits."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.roles.models import Role
from ziggurat.application.users.models import User


class RoleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> Role | None:
        return await self._session.get(Role, name)

    async def list_all(self) -> list[Role]:
        return list(await self._session.scalars(select(Role).order_by(Role.name)))

    async def add(self, role: Role) -> None:
        self._session.add(role)
        await self._session.flush()

    async def delete(self, role: Role) -> None:
        await self._session.delete(role)
        await self._session.flush()

    async def count_users(self, name: str) -> int:
        query = select(func.count()).select_from(User).where(User.role == name)
        return await self._session.scalar(query) or 0

    async def count_active_users_in(self, names: Iterable[str], *, excluding: str | None = None) -> int:
        query = select(func.count()).select_from(User).where(User.role.in_(list(names)), User.is_active)
        if excluding is not None:
            query = query.where(User.id != excluding)
        return await self._session.scalar(query) or 0
