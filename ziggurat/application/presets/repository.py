"""SQL for presets. Gets its session in `__init__`; never commits. Every read filters on the owner."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.presets.models import Preset

MAX_PRESETS_LISTED = 500


class PresetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, preset: Preset) -> None:
        self._session.add(preset)
        await self._session.flush()

    async def get(self, user_id: str, preset_id: str) -> Preset | None:
        return await self._session.scalar(
            select(Preset).where(Preset.id == preset_id, Preset.user_id == user_id)
        )

    async def list_for(self, user_id: str) -> list[Preset]:
        rows = await self._session.scalars(
            select(Preset).where(Preset.user_id == user_id).order_by(Preset.name).limit(MAX_PRESETS_LISTED)
        )
        return list(rows)

    async def delete(self, preset: Preset) -> None:
        await self._session.delete(preset)
        await self._session.flush()
