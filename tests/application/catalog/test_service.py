"""Model access: the role's allowed models and the registry's rules, decided in one place."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event

from tests.application.conftest import MODEL, register
from ziggurat.application.auth.principal import Principal, UserId
from ziggurat.application.catalog.schemas import ModelEntryCreate, ModelEntryUpdate
from ziggurat.application.catalog.service import RegistryRule, can_use_model
from ziggurat.application.container import Application
from ziggurat.errors import Forbidden, ModelNotFound


def _principal(
    *, role: str = "user", scopes: set[str] | None = None, models: set[str] | None = None
) -> Principal:
    return Principal(
        user_id=UserId("u"),
        role=role,
        scopes=frozenset({"chat"} if scopes is None else scopes),
        allowed_models=frozenset({"*"} if models is None else models),
    )


@pytest.mark.parametrize(
    ("principal", "rule", "allowed"),
    [
        (_principal(), None, True),
        (_principal(scopes=set()), None, False),
        (_principal(models={"m"}), None, True),
        (_principal(models={"other"}), None, False),
        (_principal(), RegistryRule(True, frozenset({"user"}), None, ""), True),
        (_principal(), RegistryRule(True, frozenset({"admin"}), None, ""), False),
        (_principal(), RegistryRule(False, None, None, ""), False),
    ],
)
def test_can_use_model(principal: Principal, rule: RegistryRule | None, allowed: bool) -> None:
    assert can_use_model(principal, "m", rule) is allowed


async def test_resolve_hides_what_the_principal_may_not_use(application: Application) -> None:
    admin = await register(application, "root@example.com")
    user = await register(application, "u@example.com")
    assert (await application.catalog.resolve(user, None)).name == MODEL
    entry = await application.catalog.create_entry(
        admin, ModelEntryCreate(name=MODEL, allowed_roles=["admin"])
    )
    with pytest.raises(ModelNotFound):
        await application.catalog.resolve(user, MODEL)
    with pytest.raises(ModelNotFound):
        await application.catalog.resolve(user, None)
    assert (await application.catalog.resolve(admin, MODEL)).name == MODEL
    await application.catalog.update_entry(admin, entry.id, ModelEntryUpdate(allowed_roles=None))
    assert [model.info.name for model in await application.catalog.list_models(user)] == [MODEL]
    with pytest.raises(Forbidden):
        await application.catalog.list_entries(user)


async def test_requests_that_find_the_rules_stale_together_share_one_read(application: Application) -> None:
    user = await register(application, "u@example.com")
    catalog = application.catalog
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM model_registry" in statement:
            statements.append(statement)

    sync_engine = application.database.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        catalog._invalidate()  # stale now, as at the end of the TTL
        resolved = await asyncio.gather(*(catalog.resolve(user, None) for _ in range(50)))
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert {model.name for model in resolved} == {MODEL}
    assert len(statements) == 1
