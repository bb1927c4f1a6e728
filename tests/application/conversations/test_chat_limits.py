"""Chat under rate limits: refused before anything is stored; a reply holds its slot until it is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume
from tests.brokers import memory_broker, running_worker
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.config import LimitSettings, Settings
from ziggurat.connection.models import StaticModels
from ziggurat.errors import RateLimited
from ziggurat.service.generation import GenerationService
from ziggurat.service.limits.gate import RateLimitGate
from ziggurat.service.limits.memory import MemoryRateLimiter
from ziggurat.service.metrics import Metrics


@pytest.fixture
def settings(settings: Settings) -> Settings:
    limits = LimitSettings(requests_per_minute=2, max_concurrent_streams=1)
    return settings.model_copy(update={"limits": limits})


@pytest.fixture
async def generation(engine: ScriptedEngine) -> AsyncIterator[GenerationService]:
    broker = memory_broker()
    metrics = Metrics()
    async with running_worker(broker, engine):
        yield GenerationService(
            broker=broker,
            models=StaticModels([engine.info]),
            metrics=metrics,
            limits=RateLimitGate(MemoryRateLimiter(), metrics),
        )
    await broker.aclose()


async def _messages(application: Application) -> int:
    async with application.database.session() as session:
        return await session.scalar(select(func.count()).select_from(Message)) or 0


async def test_a_refused_message_is_not_stored(application: Application, alice: Principal) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    for content in ("one", "two"):
        await consume(
            await application.chat.post_message(alice, conversation.id, MessageCreate(content=content))
        )

    with pytest.raises(RateLimited, match="2 requests per minute"):
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="three"))
    assert await _messages(application) == 4


async def test_a_replayed_retry_is_not_a_new_request(application: Application, alice: Principal) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    message = MessageCreate(content="hello")
    await consume(await application.chat.post_message(alice, conversation.id, message, idempotency_key="k1"))
    await consume(await application.chat.post_message(alice, conversation.id, message, idempotency_key="k1"))
    await consume(await application.chat.post_message(alice, conversation.id, message, idempotency_key="k2"))
    with pytest.raises(RateLimited):
        await application.chat.post_message(alice, conversation.id, message, idempotency_key="k3")


async def test_a_reply_holds_its_slot_until_stored_even_when_nobody_reads_it(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    engine.gate = asyncio.Event()
    conversation = await application.conversations.create(alice, ConversationCreate())
    first = await application.chat.post_message(alice, conversation.id, MessageCreate(content="one"))
    with pytest.raises(RateLimited, match="at most 1"):
        await application.chat.post_message(alice, conversation.id, MessageCreate(content="two"))

    engine.gate.set()
    stored = await application.chat.wait_stored(first.reply_id, timeout_s=10)
    assert stored.status == "complete"
    await consume(await application.chat.post_message(alice, conversation.id, MessageCreate(content="three")))
