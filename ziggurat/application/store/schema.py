"""Keep the database schema at the revision this code expects (Alembic, run from code).

`upgrade_database` is called at every start: it is a no-op when the schema is
current, and on PostgreSQL it holds an advisory lock so replicas starting
together migrate once, one after another. The migrations ship inside the
package (`migrations/`), so no `alembic.ini` is needed at runtime; the one in
that folder only serves developers writing new revisions with the alembic CLI.

Migrations run in a thread with its own event loop and short-lived engine:
Alembic keeps the running migration in module globals, so migrations in one
process take turns behind a lock, which must not block the caller's loop. That
engine also lacks the SQLite foreign-key pragma on purpose: Alembic's batch
mode rebuilds SQLite tables by copy-and-drop, and with foreign keys on,
dropping a parent table would cascade-delete its children's rows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ziggurat.application.store.database import ensure_sqlite_directory
from ziggurat.application.store.orm import Base

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any fixed 64-bit number, shared by every ziggurat process migrating the same database.
_MIGRATION_LOCK_KEY = 0x7A1_66_00_0001


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code; `connection` is the one env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Alembic keeps the running migration in module globals (`alembic.context`), so two
# migrations in one process must not overlap, even on different event loops.
_IN_PROCESS_LOCK = threading.Lock()


async def _run_on_connection(url: str, step: Callable[[Config], None]) -> None:
    ensure_sqlite_directory(url)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(lambda sync_connection: step(alembic_config(sync_connection)))
    finally:
        await engine.dispose()


def _run_serialized(url: str, step: Callable[[Config], None]) -> None:
    with _IN_PROCESS_LOCK:
        asyncio.run(_run_on_connection(url, step))


async def _migrate(url: str, step: Callable[[Config], None]) -> None:
    # A thread of its own (with its own event loop) can wait for the lock without
    # blocking the caller's event loop.
    await asyncio.to_thread(_run_serialized, url, step)


async def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply every migration up to `revision` in one transaction (all or nothing on PostgreSQL)."""
    await _migrate(url, lambda config: command.upgrade(config, revision))


async def downgrade_database(url: str, revision: str) -> None:
    """Revert to `revision` (`base` empties the schema). For operators and tests, never at start."""
    await _migrate(url, lambda config: command.downgrade(config, revision))


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync_connection: MigrationContext.configure(sync_connection).get_current_revision()
            )
    finally:
        await engine.dispose()


def application_metadata() -> MetaData:
    """The metadata of every application table (for Alembic's autogenerate and drift checks)."""
    # Imported here, not at module top: the tables belong to the features above the store.
    import ziggurat.application.audit.models
    import ziggurat.application.auth.models
    import ziggurat.application.catalog.models
    import ziggurat.application.conversations.models
    import ziggurat.application.feedback.models
    import ziggurat.application.presets.models
    import ziggurat.application.roles.models
    import ziggurat.application.usage.models
    import ziggurat.application.users.models  # noqa: F401

    return Base.metadata
