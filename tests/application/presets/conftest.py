from __future__ import annotations

import pytest

from tests.application.conftest import register
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application


@pytest.fixture
async def alice(application: Application) -> Principal:
    return await register(application, "alice@example.com")


@pytest.fixture
async def bob(application: Application, alice: Principal) -> Principal:
    return await register(application, "bob@example.com")
