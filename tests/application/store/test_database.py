"""The database handle: SQLite pragmas, UTC timestamps, readiness ping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User


async def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path: object) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/nested/dir/z.db")
    from ziggurat.application.store.database import ensure_sqlite_directory

    ensure_sqlite_directory(database.url)
    try:
        async with database.session() as session:
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await session.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await database.aclose()


async def test_ping_answers(database: Database) -> None:
    assert await database.ping() is True


async def test_ping_says_false_when_the_server_is_gone() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        assert await database.ping() is False
    finally:
        await database.aclose()


async def test_timestamps_come_back_as_aware_utc(database: Database) -> None:
    paris_noon = datetime(2030, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with database.session() as session:
        session.add(
            User(id="u1", email="a@example.com", password_hash="x", role="user", created_at=paris_noon)
        )
        await session.commit()
    async with database.session() as session:
        stored = await session.scalar(select(User.created_at).where(User.id == "u1"))
    assert stored == paris_noon
    assert stored is not None and stored.tzinfo == UTC and stored.hour == 10


async def test_naive_timestamps_are_refused(database: Database) -> None:
    async with database.session() as session:
        session.add(
            User(email="b@example.com", password_hash="x", role="user", created_at=datetime(2030, 1, 1))
        )
        with pytest.raises(StatementError, match="naive"):
            await session.commit()


async def test_foreign_keys_are_enforced(database: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    from ziggurat.application.conversations.models import Conversation

    async with database.session() as session:
        session.add(Conversation(user_id="no-such-user"))
        with pytest.raises(IntegrityError):
            await session.commit()
