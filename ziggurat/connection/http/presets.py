"""Presets under `/api/presets`: named parameter sets (system prompt, model, temperature, max_tokens).

A conversation refers to a preset with `preset_id`; another user's preset is `404`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from ziggurat.application.presets.schemas import PresetCreate, PresetList, PresetOut, PresetUpdate
from ziggurat.connection.http.deps import ApplicationDep, ChatPrincipalDep

router = APIRouter(prefix="/api/presets", tags=["presets"])

PresetId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("", status_code=201)
async def create_preset(
    body: PresetCreate, principal: ChatPrincipalDep, application: ApplicationDep
) -> PresetOut:
    return await application.presets.create(principal, body)


@router.get("")
async def list_presets(principal: ChatPrincipalDep, application: ApplicationDep) -> PresetList:
    return await application.presets.list_presets(principal)


@router.get("/{preset_id}")
async def get_preset(
    preset_id: PresetId, principal: ChatPrincipalDep, application: ApplicationDep
) -> PresetOut:
    return await application.presets.get(principal, preset_id)


@router.patch("/{preset_id}")
async def update_preset(
    preset_id: PresetId, body: PresetUpdate, principal: ChatPrincipalDep, application: ApplicationDep
) -> PresetOut:
    return await application.presets.update(principal, preset_id, body)


@router.delete("/{preset_id}", status_code=204)
async def delete_preset(
    preset_id: PresetId, principal: ChatPrincipalDep, application: ApplicationDep
) -> Response:
    await application.presets.delete(principal, preset_id)
    return Response(status_code=204)
