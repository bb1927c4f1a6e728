"""Fixtures shared by the whole test suite.

`database_url` runs a test once on SQLite (a fresh file) and once on PostgreSQL.
The PostgreSQL database is created once per test session and xdist worker
(`ziggurat_test_<worker>_<random>`) on the server at `ZIGGURAT_TEST_POSTGRES_URL`,
emptied before each test, and dropped at the end. Its tests are marked
`postgres`; when the server is unreachable they fail under `CI=true` and are
skipped, with the reason, elsewhere. Tables are truncated rather than rolled
back, because the services under test commit on purpose (a user message must
be durable before generation starts).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_database(server: URL, name: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(server), timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(server: URL, name: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(server), timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _empty_database(url: URL) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await connection.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A database of its own on the test PostgreSQL server for this session (and xdist worker)."""
    server = make_url(os.environ.get("ZIGGURAT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"ziggurat_test_{worker}_{secrets.token_hex(4)}"
    try:
        asyncio.run(_create_database(server, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        hint = "(set ZIGGURAT_TEST_POSTGRES_URL, or CI=true to fail instead)"
        require_service("PostgreSQL", server.render_as_string(), exc, hint=hint)
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_drop_database(server, name))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (not yet migrated), once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ziggurat.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    asyncio.run(_empty_database(make_url(url)))
    return url


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def unavailable(reason: str, *, hint: str = "") -> NoReturn:
    """Fail under `CI=true`, skip with the reason (and `hint`) elsewhere: a missing service or
    tool must never pass silently."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(f"{reason} {hint}" if hint else reason)


def require_service(name: str, url: str, error: BaseException, *, hint: str = "") -> NoReturn:
    unavailable(f"{name} is unreachable at {url}: {error!r}", hint=hint)


async def _redis_answers(url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _rabbitmq_answers(url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    await connection.close()


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    url = os.environ.get("ZIGGURAT_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        asyncio.run(_redis_answers(url))
    except Exception as exc:
        require_service("Redis", url, exc)
    return url


@pytest.fixture(scope="session")
def rabbitmq_server_url() -> str:
    url = os.environ.get("ZIGGURAT_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    try:
        asyncio.run(_rabbitmq_answers(url))
    except Exception as exc:
        require_service("RabbitMQ", url, exc)
    return url


@pytest.fixture
def key_prefix() -> str:
    """A Redis key / RabbitMQ queue prefix of this test's own, so tests never see each other's data."""
    return f"zigtest-{secrets.token_hex(4)}"
