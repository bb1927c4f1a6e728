"""Relational storage for the application layer: SQLAlchemy (async) plus Alembic.

One code path serves the embedded default (SQLite through aiosqlite) and
production (PostgreSQL through asyncpg). Tables are defined next to their
feature (`users/models.py`, `conversations/models.py`) on the shared `Base`;
this package only owns the engine, sessions and the schema migrations. It holds
no queries: those live in each feature's repository.
"""
