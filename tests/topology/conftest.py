"""Fixtures of the multi-process tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _empty_database
from tests.topology.cluster import Cluster, cluster

TopologyFactory = Callable[..., AbstractContextManager[Cluster]]


@pytest.fixture
def database_url_emptied(postgres_database_url: str) -> None:
    """The session's PostgreSQL database, emptied: the processes under test migrate and share it."""
    asyncio.run(_empty_database(make_url(postgres_database_url)))


@pytest.fixture
def make_topology(
    tmp_path: Path,
    postgres_database_url: str,
    redis_server_url: str,
    rabbitmq_server_url: str,
    key_prefix: str,
    database_url_emptied: None,
) -> TopologyFactory:
    """Processes on the real servers with this test's prefixes; extra `ZIGGURAT_*` settings as keywords."""

    def make(**settings: str) -> AbstractContextManager[Cluster]:
        return cluster(
            tmp_path,
            database_url=postgres_database_url,
            redis_url=redis_server_url,
            amqp_url=rabbitmq_server_url,
            prefix=key_prefix,
            ZIGGURAT_CONVERSATIONS__AUTO_TITLE="false",
            **settings,
        )

    return make


def topology_fixture(**settings: str) -> Callable[[TopologyFactory], Iterator[Cluster]]:
    """A `topology` fixture for one test module, with that module's settings."""

    @pytest.fixture
    def topology(make_topology: TopologyFactory) -> Iterator[Cluster]:
        with make_topology(**settings) as running:
            yield running

    return topology
