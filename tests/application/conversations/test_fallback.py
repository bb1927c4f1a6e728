"""Chat replies that fall back to another model: the client's reader and the reply keeper follow it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.application.conftest import MODEL, ScriptedEngine
from tests.application.conversations.conftest import consume, stored_message
from tests.brokers import memory_broker, running_worker
from tests.service.routing.engines import RoutedEngine
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.application.store.database import Database
from ziggurat.connection.models import StaticModels
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationRequest
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics
from ziggurat.service.routing.policy import RoutingPolicy

BASE = "base-model"


@pytest.fixture
def base() -> RoutedEngine:
    return RoutedEngine(BASE, inter_token_s=0.01)


@pytest.fixture
async def generation(engine: ScriptedEngine, base: RoutedEngine) -> AsyncIterator[GenerationService]:
    """The fine-tuned test model falls back to a base model; a slow first token moves on after 0.3 s."""
    broker = memory_broker()
    policy = RoutingPolicy(fallbacks={MODEL: (BASE,)}, first_token_timeout_s=0.3)
    async with running_worker(broker, engine), running_worker(broker, base):
        yield GenerationService(
            broker=broker, models=StaticModels([engine.info, base.info]), metrics=Metrics(), routing=policy
        )
    await broker.aclose()


async def fail_before_the_first_token(request: GenerationRequest) -> None:
    raise UpstreamFailed("the fine-tuned model is down")


async def test_a_failing_model_falls_back_for_the_client_and_the_stored_reply(
    application: Application, alice: Principal, engine: ScriptedEngine, base: RoutedEngine, database: Database
) -> None:
    engine.before_first_token = fail_before_the_first_token
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="Hi"))
    text, end = await consume(turn)

    assert text == base.reply
    reply = end.message
    assert (reply.status, reply.content, reply.model) == ("complete", base.reply, BASE)
    row = await stored_message(database, turn.reply_id)
    assert (row.content, row.model) == (base.reply, BASE)
    assert base.requests[0].request_id == f"{row.job_id}.1"  # the reply keeps the request's own job id


async def test_a_slow_model_falls_back_and_a_reconnecting_client_reads_the_new_answer(
    application: Application, alice: Principal, engine: ScriptedEngine, base: RoutedEngine
) -> None:
    engine.gate = asyncio.Event()  # the fine-tuned model never starts answering
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="Hi"))
    resumed = await application.chat.resume(alice, turn.reply_id, after=None)
    (text, end), (resumed_text, resumed_end) = await asyncio.gather(consume(turn), consume(resumed))

    assert text == resumed_text == base.reply
    assert end.message == resumed_end.message
    assert (end.message.content, end.message.model) == (base.reply, BASE)
    assert len(engine.requests) == 1 and len(base.requests) == 1


async def test_a_stop_during_the_fallback_stops_the_new_answer(
    application: Application, alice: Principal, engine: ScriptedEngine, base: RoutedEngine
) -> None:
    engine.before_first_token = fail_before_the_first_token
    base.reply = " ".join(["word"] * 300)
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="Hi"))
    await asyncio.wait_for(base.started.wait(), 5)
    stopped = await application.chat.stop(alice, conversation.id, turn.reply_id)

    assert stopped.status == "cancelled" and base.cancelled == 1
    assert stopped.content.startswith("word") and len(stopped.content.split()) < 300
