"""Alembic environment.

At runtime `store/schema.py` hands in an open connection (inside its
transaction and advisory lock) through `config.attributes["connection"]`.
From the alembic CLI there is none, so this opens its own async engine on the
URL from `-x url=...` or the settings. Offline mode (`--sql`) renders SQL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ziggurat.application.store.schema import application_metadata

target_metadata = application_metadata()


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _cli_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from ziggurat.config import Settings

    return Settings().resolved_database_url


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure_and_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=_cli_url(), target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        asyncio.run(_run_with_own_engine(_cli_url()))


run()
