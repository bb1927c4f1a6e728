"""Roles: custom roles shape the principal, and a change reaches cached credentials at once."""

from __future__ import annotations

import pytest

from tests.application.conftest import TEST_SECRET_KEY, register
from ziggurat.application.admin.schemas import UserUpdate
from ziggurat.application.auth.authenticator import Authenticator
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.schemas import ApiKeyCreate
from ziggurat.application.auth.tokens import AccessTokens
from ziggurat.application.container import Application
from ziggurat.application.roles.schemas import RoleCreate, RoleUpdate
from ziggurat.application.roles.service import RoleService
from ziggurat.application.store.database import Database
from ziggurat.errors import Forbidden


async def test_a_custom_role_shapes_the_principal_and_changes_apply_at_once(
    application: Application, database: Database
) -> None:
    cache = CredentialCache(ttl_s=60)
    authenticator = Authenticator(
        database=database,
        access_tokens=AccessTokens(secret_key=TEST_SECRET_KEY, algorithm="HS256", ttl_s=60),
        cache=cache,
    )
    roles = RoleService(database=database, credential_cache=cache)
    admin = await register(application, "root@example.com")
    user = await register(application, "u@example.com")
    key = await application.api_keys.create(user, ApiKeyCreate(name="k"))
    await roles.create(admin, RoleCreate(name="team-a", allowed_models=["m1"], requests_per_minute=30))
    await application.admin_users.update(admin, user.user_id, UserUpdate(role="team-a"))

    principal = await authenticator.authenticate(key.key)
    assert principal.role == "team-a" and principal.allowed_models == frozenset({"m1"})
    assert principal.quota.requests_per_minute == 30 and principal.may_use_model("m1")
    assert not principal.may_use_model("m2")

    await roles.update(admin, "team-a", RoleUpdate(allowed_models=["*"]))
    assert (await authenticator.authenticate(key.key)).may_use_model("m2")
    await roles.update(admin, "team-a", RoleUpdate(permissions=[]))
    assert (await authenticator.authenticate(key.key)).scopes == frozenset()


async def test_only_admins_manage_roles(application: Application) -> None:
    await register(application, "root@example.com")
    user = await register(application, "u@example.com")
    with pytest.raises(Forbidden):
        await application.roles.list_roles(user)
    with pytest.raises(Forbidden):
        await application.roles.create(user, RoleCreate(name="x"))


async def test_a_roles_limits_reach_its_users_and_null_gives_them_back_to_the_defaults(
    application: Application, database: Database
) -> None:
    cache = CredentialCache(ttl_s=60)
    authenticator = Authenticator(
        database=database,
        access_tokens=AccessTokens(secret_key=TEST_SECRET_KEY, algorithm="HS256", ttl_s=60),
        cache=cache,
    )
    roles = RoleService(database=database, credential_cache=cache)
    admin = await register(application, "root@example.com")
    user = await register(application, "u@example.com")
    key = await application.api_keys.create(user, ApiKeyCreate(name="k"))
    created = await roles.create(
        admin,
        RoleCreate(name="metered", tokens_per_minute=5000, max_concurrent_streams=2, monthly_tokens=10**6),
    )
    assert (created.tokens_per_minute, created.max_concurrent_streams, created.monthly_tokens) == (
        5000,
        2,
        10**6,
    )
    await application.admin_users.update(admin, user.user_id, UserUpdate(role="metered"))
    quota = (await authenticator.authenticate(key.key)).quota
    assert (quota.tokens_per_minute, quota.max_concurrent_streams, quota.monthly_tokens) == (5000, 2, 10**6)

    updated = await roles.update(admin, "metered", RoleUpdate(max_concurrent_streams=None, daily_tokens=100))
    assert updated.max_concurrent_streams is None and updated.tokens_per_minute == 5000
    quota = (await authenticator.authenticate(key.key)).quota
    assert quota.max_concurrent_streams is None and quota.daily_tokens == 100
