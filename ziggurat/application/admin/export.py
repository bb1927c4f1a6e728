"""Reading and deleting all data of one user, for data-subject requests.

The export walks the schema instead of naming tables: every table with a
`user_id` foreign key to `users` is exported (rows of that user), and so is
every table that references one of those (a conversation's messages, say).
Tables added later by other features are therefore included without touching
this module. Secret digests (`*_hash`) are never exported, and refresh tokens
(session bookkeeping, nothing the user made) are left out.

Deleting relies on the foreign keys' `ON DELETE CASCADE`, which the schema
declares for every table that belongs to a user; SQLite enforces them because
`Database` turns foreign keys on.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.store.orm import Base

_SKIPPED_TABLES = frozenset({"refresh_tokens"})


def _is_secret(column_name: str) -> bool:
    return column_name.endswith("_hash")


def _owned_tables() -> list[tuple[Table, str]]:
    """(table, user-id column) for tables that point at `users` through a `user_id` column."""
    owned: list[tuple[Table, str]] = []
    for table in Base.metadata.sorted_tables:
        if table.name in _SKIPPED_TABLES or "user_id" not in table.c:
            continue
        if any(fk.column.table.name == "users" for fk in table.c.user_id.foreign_keys):
            owned.append((table, "user_id"))
    return owned


def _child_tables(parents: set[str]) -> list[tuple[Table, str, str]]:
    """(table, fk column, parent table) for tables referencing an owned table, without their own user_id."""
    children: list[tuple[Table, str, str]] = []
    for table in Base.metadata.sorted_tables:
        if table.name in parents or table.name in _SKIPPED_TABLES or "user_id" in table.c:
            continue
        for fk in table.foreign_keys:
            parent = fk.column.table.name
            if parent in parents and fk.column.name == "id" and fk.parent.table is table:
                children.append((table, fk.parent.name, parent))
                break
    return children


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


async def collect_user_data(session: AsyncSession, user_id: str) -> dict[str, list[dict[str, object]]]:
    tables: dict[str, list[dict[str, object]]] = {}
    ids: dict[str, list[str]] = {}
    for table, column in _owned_tables():
        rows = (await session.execute(select(table).where(table.c[column] == user_id))).mappings().all()
        tables[table.name] = [_row(table, row) for row in rows]
        if "id" in table.c:
            ids[table.name] = [str(row["id"]) for row in rows]
    for table, column, parent in _child_tables(set(ids)):
        parent_ids = ids.get(parent, [])
        rows = []
        for start in range(0, len(parent_ids), 500):
            chunk = parent_ids[start : start + 500]
            rows.extend(
                (await session.execute(select(table).where(table.c[column].in_(chunk)))).mappings().all()
            )
        tables[table.name] = [_row(table, row) for row in rows]
    return tables


def _row(table: Table, row: object) -> dict[str, object]:
    mapping = dict(row)  # type: ignore[call-overload]
    return {name: _jsonable(value) for name, value in mapping.items() if not _is_secret(name)}
