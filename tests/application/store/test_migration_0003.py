"""Migration 0003 keeps existing conversations and messages, in both directions."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ziggurat.application.store.schema import downgrade_database, upgrade_database

NOW = "2026-01-01 00:00:00+00:00"


async def _execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = await connection.execute(text(statement))
                if result.returns_rows:
                    rows = [tuple(row) for row in result]
            return rows
    finally:
        await engine.dispose()


async def test_existing_chats_survive_the_upgrade_and_the_downgrade(database_url: str) -> None:
    await upgrade_database(database_url, "0002")
    await _execute(
        database_url,
        "INSERT INTO users (id, email, password_hash, role, is_active, created_at) "
        f"VALUES ('u', 'u@example.com', 'x', 'user', true, '{NOW}')",
        "INSERT INTO conversations (id, user_id, title, created_at, updated_at) "
        f"VALUES ('c', 'u', 'Old chat', '{NOW}', '{NOW}')",
        "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, created_at) "
        f"VALUES ('m1', 'c', NULL, 'user', 'hi', 'complete', '{NOW}')",
        "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, created_at) "
        f"VALUES ('m2', 'c', 'm1', 'assistant', 'hello', 'complete', '{NOW}')",
    )

    await upgrade_database(database_url)
    upgraded = await _execute(
        database_url,
        "SELECT title, is_pinned, is_archived, current_leaf_id, preset_id FROM conversations",
    )
    assert [tuple(row) for row in upgraded] == [("Old chat", False, False, None, None)]
    assert await _execute(database_url, "SELECT id, parent_id FROM messages ORDER BY id") == [
        ("m1", None),
        ("m2", "m1"),
    ]

    await downgrade_database(database_url, "0002")
    assert await _execute(database_url, "SELECT id, title FROM conversations") == [("c", "Old chat")]
    assert await _execute(database_url, "SELECT count(*) FROM messages") == [(2,)]
