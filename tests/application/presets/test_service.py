"""Presets: a user's own named parameter sets; unique names; another user's are not found."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.schemas import ConversationCreate
from ziggurat.application.presets.schemas import PresetCreate, PresetUpdate
from ziggurat.errors import Conflict, ModelNotFound, NotFound


async def test_create_list_change_and_delete(application: Application, alice: Principal) -> None:
    created = await application.presets.create(
        alice, PresetCreate(name=" Careful ", system_prompt="Think first.", temperature=0.1, max_tokens=200)
    )
    assert (created.name, created.temperature, created.max_tokens) == ("Careful", 0.1, 200)
    await application.presets.create(alice, PresetCreate(name="Another"))
    assert [p.name for p in (await application.presets.list_presets(alice)).data] == ["Another", "Careful"]

    changed = await application.presets.update(alice, created.id, PresetUpdate(temperature=None, name="Calm"))
    assert (changed.name, changed.temperature, changed.system_prompt) == ("Calm", None, "Think first.")
    assert (await application.presets.get(alice, created.id)) == changed

    conversation = await application.conversations.create(alice, ConversationCreate(preset_id=created.id))
    await application.presets.delete(alice, created.id)
    with pytest.raises(NotFound):
        await application.presets.get(alice, created.id)
    assert (await application.conversations.get(alice, conversation.id)).preset_id is None


async def test_names_are_unique_per_user(application: Application, alice: Principal, bob: Principal) -> None:
    await application.presets.create(alice, PresetCreate(name="Mine"))
    await application.presets.create(bob, PresetCreate(name="Mine"))
    with pytest.raises(Conflict):
        await application.presets.create(alice, PresetCreate(name="Mine"))
    other = await application.presets.create(alice, PresetCreate(name="Other"))
    with pytest.raises(Conflict):
        await application.presets.update(alice, other.id, PresetUpdate(name="Mine"))


async def test_users_never_see_or_touch_each_others_presets(
    application: Application, alice: Principal, bob: Principal
) -> None:
    preset = await application.presets.create(alice, PresetCreate(name="Private"))
    with pytest.raises(NotFound):
        await application.presets.get(bob, preset.id)
    with pytest.raises(NotFound):
        await application.presets.update(bob, preset.id, PresetUpdate(name="Stolen"))
    with pytest.raises(NotFound):
        await application.presets.delete(bob, preset.id)
    assert (await application.presets.list_presets(bob)).data == []


async def test_unknown_models_and_bad_values_are_refused(application: Application, alice: Principal) -> None:
    with pytest.raises(ModelNotFound):
        await application.presets.create(alice, PresetCreate(name="x", model="gpt-17"))
    with pytest.raises(ValidationError):
        PresetCreate(name="   ")
    with pytest.raises(ValidationError):
        PresetCreate(name="x", temperature=3)
    with pytest.raises(ValidationError):
        PresetCreate(name="x", surprise=1)  # type: ignore[call-arg]
