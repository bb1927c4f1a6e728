"""Alembic migrations for the application tables; loaded by Alembic, never imported."""
