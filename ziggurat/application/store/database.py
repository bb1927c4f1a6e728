"""The database handle: one async engine and its session factory per process.

`Database` is opened by the composition root and closed on shutdown; services
take sessions from it for one unit of work at a time and never hold one across
a model stream (a pooled connection per streaming client would cap concurrent
chats at the pool size).

SQLite is the zero-setup default. It allows one writer at a time, and a
transaction that reads before it writes fails at once (no busy wait) when
another connection wrote in between; so it gets a single pooled connection,
which turns those failures into queueing, plus WAL (readers never block the
writer) and foreign-key enforcement, which SQLite leaves off by default.
PostgreSQL gets a bounded pool with pre-ping so a restarted server or a dropped
idle connection costs one retry, not a failed request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ziggurat.telemetry import get_logger

log = get_logger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000


@dataclass(slots=True, frozen=True)
class PoolOptions:
    """Connection pool sizing for server databases (SQLite ignores it, see the module docstring)."""

    size: int = 10
    max_overflow: int = 20
    timeout_s: float = 30.0
    recycle_s: int = 1800


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _engine_options(url: URL, pool: PoolOptions) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            # An in-memory database lives in its connection: every session must share that one.
            from sqlalchemy.pool import StaticPool

            return {"poolclass": StaticPool}
        return {"pool_size": 1, "max_overflow": 0, "pool_timeout": pool.timeout_s}
    return {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout_s,
        "pool_recycle": pool.recycle_s,
        "pool_pre_ping": True,
    }


def _configure_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Safe with WAL: a power cut may lose the last commits, never corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class Database:
    """An async engine plus its session factory. Sessions do not expire objects on commit."""

    def __init__(self, url: str, *, pool: PoolOptions | None = None, echo: bool = False) -> None:
        self.url = make_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, echo=echo, **_engine_options(self.url, pool or PoolOptions())
        )
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _configure_sqlite_connection)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def session(self) -> AsyncSession:
        """A new session for one unit of work; use it as `async with database.session() as s:`."""
        return self.sessions()

    async def ping(self) -> bool:
        """Whether the database answers a trivial query (the readiness check)."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (DBAPIError, PoolTimeout, OSError) as exc:
            log.warning(
                "database_unreachable", backend=self.url.get_backend_name(), error_type=type(exc).__name__
            )
            return False
        return True

    async def aclose(self) -> None:
        await self.engine.dispose()


def ensure_sqlite_directory(url: str | URL) -> None:
    """Create the folder of a SQLite file database, which SQLite will not do itself."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
