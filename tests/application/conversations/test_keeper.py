"""Replies outlive their gateway: another gateway adopts an orphaned reply and stores it once.

Two `Application`s on one database and one broker stand in for two gateway
processes; they share leases the way Redis would share them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume, stored_message
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application, build_application, close_application
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.policies import KeeperPolicy
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.application.store.database import Database
from ziggurat.config import Settings
from ziggurat.connection.leases import MemoryLeases
from ziggurat.service.generation import GenerationService


@pytest.fixture
def leases() -> MemoryLeases:
    return MemoryLeases()


def _gateway(
    name: str,
    leases: MemoryLeases,
    settings: Settings,
    database: Database,
    generation: GenerationService,
    passwords: PasswordHasher,
) -> Application:
    keeping = KeeperPolicy(leases=leases, holder=name, is_shared=True, lease_ttl_s=0.3, recovery_grace_s=0)
    return build_application(
        settings, database=database, generation=generation, passwords=passwords, keeping=keeping
    )


@pytest.fixture
async def gateways(
    settings: Settings,
    database: Database,
    generation: GenerationService,
    passwords: PasswordHasher,
    leases: MemoryLeases,
) -> AsyncIterator[tuple[Application, Application]]:
    pair = tuple(
        _gateway(name, leases, settings, database, generation, passwords)
        for name in ("gateway-a", "gateway-b")
    )
    try:
        yield pair[0], pair[1]
    finally:
        for gateway in pair:
            await close_application(gateway)


@pytest.fixture
def application(gateways: tuple[Application, Application]) -> Application:
    return gateways[0]


@pytest.fixture
def other_gateway(gateways: tuple[Application, Application]) -> Application:
    return gateways[1]


async def test_a_reply_whose_gateway_stopped_is_adopted_and_stored_once(
    application: Application,
    other_gateway: Application,
    alice: Principal,
    engine: ScriptedEngine,
    database: Database,
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(30))
    engine.inter_token_s = 0.01
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="hi"))
    # While gateway A keeps the reply, B leaves it alone.
    assert await other_gateway.chat.recover_orphans() == 0

    await application.chat.keeper.aclose()  # gateway A goes away mid-answer, its lease with it
    assert (await stored_message(database, turn.reply_id)).status == "streaming"
    assert await other_gateway.chat.recover_orphans() == 1
    assert await application.chat.recover_orphans() == 0  # B holds it now

    # The client, reconnected to B, reads the whole answer from the start.
    text, end = await consume(await other_gateway.chat.resume(alice, turn.reply_id, after=None))
    assert text == engine.reply
    assert (end.message.status, end.message.content) == ("complete", engine.reply)
    async with database.session() as session:
        replies = await session.scalar(
            select(func.count()).where(
                Message.conversation_id == conversation.id, Message.role == "assistant"
            )
        )
    assert replies == 1


async def test_a_stop_from_another_gateway_reaches_the_reply(
    application: Application,
    other_gateway: Application,
    alice: Principal,
    engine: ScriptedEngine,
) -> None:
    engine.reply = " ".join(f"w{i}" for i in range(300))
    engine.inter_token_s = 0.01
    conversation = await application.conversations.create(alice, ConversationCreate())
    turn = await application.chat.post_message(alice, conversation.id, MessageCreate(content="hi"))

    stopped = await other_gateway.chat.stop(alice, conversation.id, turn.reply_id)
    assert stopped.status == "cancelled"
    assert len(stopped.content) < len(engine.reply)
    assert engine.reply.startswith(stopped.content)
