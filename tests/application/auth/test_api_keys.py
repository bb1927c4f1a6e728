"""API keys: shown once, stored hashed, scoped, revocable, managed only from a signed-in session."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.application.conftest import register
from ziggurat.application.auth.models import ApiKey
from ziggurat.application.auth.schemas import ApiKeyCreate
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import utcnow
from ziggurat.errors import Forbidden, NotFound, Unauthenticated


async def test_a_created_key_is_shown_once_and_stored_only_as_a_digest(
    application: Application, database: Database
) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="laptop"))

    assert created.key.startswith("zk-") and created.key.startswith(created.prefix)
    assert created.scopes == ["chat"]
    listed = await application.api_keys.list_keys(owner)
    assert [key.id for key in listed] == [created.id]
    assert "key" not in listed[0].model_dump()
    async with database.session() as session:
        row = await session.get(ApiKey, created.id)
    assert row is not None and created.key not in (row.key_hash, row.prefix)


async def test_a_key_authenticates_as_its_owner_with_its_scopes(application: Application) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="ci", scopes=["chat"]))

    principal = await application.authenticator.authenticate(created.key)
    assert principal.user_id == owner.user_id
    assert principal.api_key_id == created.id
    assert principal.scopes == frozenset({"chat"}) and not principal.is_admin


async def test_a_revoked_key_is_refused(application: Application) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="old"))
    await application.api_keys.revoke(owner, created.id)
    await application.api_keys.revoke(owner, created.id)

    with pytest.raises(Unauthenticated, match="revoked"):
        await application.authenticator.authenticate(created.key)
    assert (await application.api_keys.list_keys(owner))[0].revoked_at is not None


async def test_an_expired_key_is_refused(application: Application, database: Database) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="temp", expires_in_days=1))
    async with database.session() as session:
        row = await session.get(ApiKey, created.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    with pytest.raises(Unauthenticated, match="expired"):
        await application.authenticator.authenticate(created.key)


async def test_unknown_keys_are_refused(application: Application) -> None:
    with pytest.raises(Unauthenticated, match="Incorrect API key"):
        await application.authenticator.authenticate("zk-not-a-real-key")


async def test_last_used_is_stamped_at_most_once_a_minute(
    application: Application, database: Database
) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="k"))

    await application.authenticator.authenticate(created.key)
    first = await _last_used(database, created.id)
    await application.authenticator.authenticate(created.key)
    assert first is not None and await _last_used(database, created.id) == first

    async with database.session() as session:
        row = await session.get(ApiKey, created.id)
        assert row is not None
        row.last_used_at = utcnow() - timedelta(minutes=2)
        await session.commit()
    await application.authenticator.authenticate(created.key)
    latest = await _last_used(database, created.id)
    assert latest is not None and latest >= first


async def test_users_cannot_touch_each_others_keys(application: Application) -> None:
    alice = await register(application, "alice@example.com")
    bob = await register(application, "bob@example.com")
    key = await application.api_keys.create(alice, ApiKeyCreate(name="alice's"))

    assert await application.api_keys.list_keys(bob) == []
    with pytest.raises(NotFound):
        await application.api_keys.revoke(bob, key.id)
    await application.authenticator.authenticate(key.key)


async def test_a_user_cannot_create_an_admin_key(application: Application) -> None:
    await register(application, "admin@example.com")
    user = await register(application, "user@example.com")
    with pytest.raises(Forbidden):
        await application.api_keys.create(user, ApiKeyCreate(name="sneaky", scopes=["chat", "admin"]))


async def test_an_api_key_cannot_manage_api_keys(application: Application) -> None:
    owner = await register(application, "owner@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="k"))
    as_key = await application.authenticator.authenticate(created.key)

    with pytest.raises(Forbidden, match="sign in"):
        await application.api_keys.create(as_key, ApiKeyCreate(name="more"))
    with pytest.raises(Forbidden):
        await application.api_keys.revoke(as_key, created.id)


async def _last_used(database: Database, key_id: str) -> datetime | None:
    async with database.session() as session:
        return await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
