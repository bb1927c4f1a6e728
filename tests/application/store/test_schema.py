"""Migrations: idempotent upgrades, models and migrations in step, clean downgrade."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ziggurat.application.conversations.models import SEARCH_INDEXES
from ziggurat.application.store.schema import (
    application_metadata,
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)

TABLES = {
    "users",
    "refresh_tokens",
    "api_keys",
    "conversations",
    "messages",
    "roles",
    "invitations",
    "user_identities",
    "model_registry",
    "usage_events",
    "audit_events",
    "presets",
    "feedback",
}


async def _inspect(url: str, read: object) -> object:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _check_constraints(connection: Connection) -> set[str]:
    inspector = inspect(connection)
    return {
        str(constraint["name"])
        for table in ("users", "messages", "conversations", "presets", "feedback")
        for constraint in inspector.get_check_constraints(table)
    }


def _is_declared(name: str | None, type_: str, parent_names: object) -> bool:
    # PostgreSQL-only full-text indexes exist in the migration alone (see conversations/models.py).
    return not (type_ == "index" and name in SEARCH_INDEXES)


def _drift(connection: Connection) -> list[object]:
    options = {"compare_type": True, "include_name": _is_declared}
    context = MigrationContext.configure(connection, opts=options)
    return list(compare_metadata(context, application_metadata()))


async def test_upgrade_is_idempotent_and_matches_the_models(database_url: str) -> None:
    await upgrade_database(database_url)
    await upgrade_database(database_url)

    assert await current_revision(database_url) == head_revision()
    assert TABLES <= await _inspect(database_url, _tables)  # type: ignore[operator]
    assert await _inspect(database_url, _drift) == []
    # Alembic does not diff CHECK constraints, so their names are compared here.
    expected = {
        "ck_messages_role",
        "ck_messages_status",
        "ck_conversations_title_source",
        "ck_presets_temperature",
        "ck_presets_max_tokens",
        "ck_feedback_thumb",
        "ck_feedback_rating",
    }
    assert await _inspect(database_url, _check_constraints) == expected


async def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(database_url: str) -> None:
    await upgrade_database(database_url)

    await downgrade_database(database_url, "base")
    assert await current_revision(database_url) is None
    assert not TABLES & await _inspect(database_url, _tables)  # type: ignore[operator]

    await upgrade_database(database_url)
    assert await current_revision(database_url) == head_revision()


async def test_concurrent_upgrades_migrate_once(database_url: str) -> None:
    import asyncio

    await asyncio.gather(*(upgrade_database(database_url) for _ in range(3)))
    assert await current_revision(database_url) == head_revision()
