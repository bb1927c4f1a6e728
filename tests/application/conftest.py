"""Fixtures for application-layer tests: a migrated database, cheap hashing, a real generation stack.

Generation runs through the real in-process broker, a worker and a scriptable
engine (`ScriptedEngine`), so these tests exercise the same path as the
server; only the model is fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.brokers import memory_broker, running_worker
from tests.stub_engine import StubEngine
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.principal import SCOPE_ADMIN, SCOPE_CHAT, Principal, UserId
from ziggurat.application.container import Application, build_application, close_application
from ziggurat.application.store.database import Database
from ziggurat.application.store.schema import upgrade_database
from ziggurat.config import AuthSettings, Settings
from ziggurat.connection.cache.kv import MemoryKeyValueStore
from ziggurat.connection.cache.session import SessionCache
from ziggurat.connection.models import StaticModels
from ziggurat.model.engine import (
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics

MODEL = "test-model"
TEST_SECRET_KEY = "k" * 64


class ScriptedEngine(StubEngine):
    """Streams `reply` word by word; records requests; hooks let a test act before the first token."""

    def __init__(self, *, reply: str = "Hello there, how can I help?", inter_token_s: float = 0.0) -> None:
        self.reply = reply
        self.inter_token_s = inter_token_s
        self.requests: list[GenerationRequest] = []
        self.before_first_token: Callable[[GenerationRequest], Awaitable[None]] | None = None
        self.gate: asyncio.Event | None = None
        self.fail_with: str | None = None
        self._info = ModelInfo(name=MODEL, engine="scripted")
        self.slots = 16

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.requests.append(request)
        if self.before_first_token is not None:
            await self.before_first_token(request)
        if self.gate is not None:
            await self.gate.wait()
        words = self.reply.split(" ")
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(self.inter_token_s)
            yield TextDelta(word if index == 0 else " " + word)
            if self.fail_with is not None and index == 1:
                yield GenerationEnd("error", Usage(0, 0), error=self.fail_with)
                return
        yield GenerationEnd("stop", Usage(prompt_tokens=7, completion_tokens=len(words)))


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
async def generation(engine: ScriptedEngine) -> AsyncIterator[GenerationService]:
    broker = memory_broker()
    async with running_worker(broker, engine):
        yield GenerationService(broker=broker, models=StaticModels([engine.info]), metrics=Metrics())
    await broker.aclose()


@pytest.fixture
def passwords() -> PasswordHasher:
    # The smallest argon2 cost: these tests check behaviour, not hashing strength.
    return PasswordHasher(time_cost=1, memory_cost_kib=64)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await upgrade_database(database_url)
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.aclose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # No credential cache here: these tests look at what each check reads and writes in the database.
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=SecretStr(TEST_SECRET_KEY),
        auth=AuthSettings(credential_cache_ttl_s=0),
    )


@pytest.fixture
async def application(
    settings: Settings, database: Database, generation: GenerationService, passwords: PasswordHasher
) -> AsyncIterator[Application]:
    # Every application test also exercises the write-through session cache of conversations.
    session_cache = SessionCache(MemoryKeyValueStore(1000), ttl_s=600)
    application = build_application(
        settings, database=database, generation=generation, passwords=passwords, session_cache=session_cache
    )
    try:
        yield application
    finally:
        await close_application(application)


async def register(application: Application, email: str, password: str = "correct horse") -> Principal:
    """Register a user and return the principal a sign-in would give it."""
    user = await application.users.register(email, password)
    scopes = frozenset({SCOPE_CHAT, SCOPE_ADMIN}) if user.role == "admin" else frozenset({SCOPE_CHAT})
    return Principal(user_id=UserId(user.id), role=user.role, scopes=scopes)
