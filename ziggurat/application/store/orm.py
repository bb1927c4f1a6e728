"""The declarative `Base` every table derives from, and the column types they share.

Constraint names follow a fixed convention so the hand-written migrations and
the models name things identically (Alembic can then diff them, and later
migrations can drop constraints by name on every database). Timestamps are
always timezone-aware UTC in Python, whatever the database stores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, MetaData
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from ziggurat.ids import new_id_text

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 36


def new_id() -> str:
    """A random UUID as text: portable across SQLite and PostgreSQL, unguessable in URLs."""
    return new_id_text()


def utcnow() -> datetime:
    return datetime.now(UTC)


DATABASE_INT_MAX = 2**31 - 1
"""The largest value an `Integer` column holds on every supported database (PostgreSQL's int4)."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC in Python.

    SQLite keeps no zone, so values are normalised to UTC before they are
    written and tagged UTC when read; PostgreSQL stores `timestamptz`. Storing a
    naive datetime is refused, because its meaning would depend on the server.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; store aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
