"""Fixtures of the multi-process tests."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _empty_database


@pytest.fixture
def database_url_emptied(postgres_database_url: str) -> None:
    """The session's PostgreSQL database, emptied: the processes under test migrate and share it."""
    asyncio.run(_empty_database(make_url(postgres_database_url)))
