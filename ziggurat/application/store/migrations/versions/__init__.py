"""Alembic revisions, one module each, written by hand and reviewed like code."""
