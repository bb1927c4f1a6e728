"""Migration 0005 adds the roles' new limits as empty columns and removes them again, keeping the roles."""

from __future__ import annotations

from sqlalchemy import Connection, inspect

from tests.application.store.test_migration_0003 import NOW, _execute
from tests.application.store.test_schema import _inspect
from ziggurat.application.store.schema import downgrade_database, upgrade_database

NEW_COLUMNS = {"tokens_per_minute", "max_concurrent_streams", "monthly_tokens"}


def _role_columns(connection: Connection) -> set[str]:
    return {str(column["name"]) for column in inspect(connection).get_columns("roles")}


async def test_role_limits_are_added_empty_and_removed_without_losing_roles(database_url: str) -> None:
    await upgrade_database(database_url, "0004")
    await _execute(
        database_url,
        "INSERT INTO roles (name, description, permissions, allowed_models, daily_tokens, "
        "requests_per_minute, created_at, updated_at) "
        f"""VALUES ('trial', 'Trial', '["chat"]', '["*"]', 1000, 5, '{NOW}', '{NOW}')""",
    )

    await upgrade_database(database_url, "0005")
    assert NEW_COLUMNS <= await _inspect(database_url, _role_columns)  # type: ignore[operator]
    assert await _execute(
        database_url,
        "SELECT daily_tokens, requests_per_minute, tokens_per_minute, max_concurrent_streams, "
        "monthly_tokens FROM roles",
    ) == [(1000, 5, None, None, None)]
    await _execute(database_url, "UPDATE roles SET tokens_per_minute = 500, monthly_tokens = 20000")

    await downgrade_database(database_url, "0004")
    assert not NEW_COLUMNS & await _inspect(database_url, _role_columns)  # type: ignore[operator]
    assert await _execute(database_url, "SELECT name, daily_tokens, requests_per_minute FROM roles") == [
        ("trial", 1000, 5)
    ]
