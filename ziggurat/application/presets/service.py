"""Presets: create, list, read, change and delete a user's named parameter sets.

A preset's model must be one this platform serves when it is saved; a model
that disappears later is reported when a message would use it. Names are
unique per user: the database decides, so two racing creates cannot both win.
Deleting a preset detaches it from its conversations (`ON DELETE SET NULL`).
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import ModelResolver
from ziggurat.application.presets.models import Preset
from ziggurat.application.presets.repository import PresetRepository
from ziggurat.application.presets.schemas import PresetCreate, PresetList, PresetOut, PresetUpdate
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Conflict, NotFound

_NOT_FOUND = "No preset with this id."
_DUPLICATE = "You already have a preset with this name."


class PresetService:
    def __init__(self, *, database: Database, resolve_model: ModelResolver) -> None:
        self._database = database
        self._resolve_model = resolve_model

    async def create(self, principal: Principal, request: PresetCreate) -> PresetOut:
        if request.model:
            await self._resolve_model(principal, request.model)
        now = utcnow()
        preset = Preset(
            id=new_id(),
            user_id=principal.user_id,
            name=request.name.strip(),
            system_prompt=request.system_prompt or None,
            model=request.model or None,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            created_at=now,
            updated_at=now,
        )
        async with self._database.session() as session:
            try:
                await PresetRepository(session).add(preset)
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(_DUPLICATE, param="name") from exc
        return PresetOut.model_validate(preset)

    async def list_presets(self, principal: Principal) -> PresetList:
        async with self._database.session() as session:
            rows = await PresetRepository(session).list_for(principal.user_id)
        return PresetList(data=[PresetOut.model_validate(row) for row in rows])

    async def get(self, principal: Principal, preset_id: str) -> PresetOut:
        async with self._database.session() as session:
            return PresetOut.model_validate(await _owned(PresetRepository(session), principal, preset_id))

    async def update(self, principal: Principal, preset_id: str, request: PresetUpdate) -> PresetOut:
        changes = request.model_dump(exclude_unset=True)
        if changes.get("model"):
            await self._resolve_model(principal, changes["model"])
        if "name" in changes and changes["name"] is None:
            changes.pop("name")
        async with self._database.session() as session:
            preset = await _owned(PresetRepository(session), principal, preset_id)
            for field, value in changes.items():
                setattr(preset, field, value if value != "" else None)
            preset.updated_at = utcnow()
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(_DUPLICATE, param="name") from exc
        return PresetOut.model_validate(preset)

    async def delete(self, principal: Principal, preset_id: str) -> None:
        async with self._database.session() as session:
            repository = PresetRepository(session)
            await repository.delete(await _owned(repository, principal, preset_id))
            await session.commit()


async def _owned(repository: PresetRepository, principal: Principal, preset_id: str) -> Preset:
    # Another user's preset is "not found", never "forbidden": existence must not leak.
    preset = await repository.get(principal.user_id, preset_id)
    if preset is None:
        raise NotFound(_NOT_FOUND, param="preset_id")
    return preset
