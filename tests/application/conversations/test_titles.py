"""Automatic titles: the model names a conversation after its first exchange, never over a user title."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.schemas import ConversationCreate, ConversationUpdate, MessageCreate
from ziggurat.application.conversations.titles import INSTRUCTION, clean_title
from ziggurat.config import ConversationSettings, Settings
from ziggurat.connection.broker.base import Priority
from ziggurat.model.engine import GenerationEnd, GenerationEvent, GenerationRequest, TextDelta, Usage
from ziggurat.service.answer_stream import GenerationStream


class TitlingEngine(ScriptedEngine):
    """Answers chat with `reply` and title requests with `title` (held back while `title_gate` is closed)."""

    def __init__(self) -> None:
        super().__init__(reply="Kyoto has many temples.")
        self.title = '"Temples of Kyoto."'
        self.title_gate = asyncio.Event()
        self.title_gate.set()
        self.title_requests: list[GenerationRequest] = []
        self.title_error: str | None = None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if request.messages[0].content != INSTRUCTION:
            async for event in super().generate(request):
                yield event
            return
        self.title_requests.append(request)
        await self.title_gate.wait()
        if self.title_error is not None:
            yield GenerationEnd("error", Usage(0, 0), error=self.title_error)
            return
        yield TextDelta(self.title)
        yield GenerationEnd("stop", Usage(prompt_tokens=20, completion_tokens=4))


@pytest.fixture
def engine() -> TitlingEngine:
    return TitlingEngine()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"conversations": ConversationSettings(auto_title=True)})


async def _exchange(
    application: Application, principal: Principal, conversation_id: str, content: str
) -> None:
    await consume(
        await application.chat.post_message(principal, conversation_id, MessageCreate(content=content))
    )


async def test_the_first_exchange_gets_a_model_written_title_at_background_priority(
    application: Application, alice: Principal, engine: TitlingEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation = application.chat.titles._generation
    priorities: list[Priority] = []
    submit = generation.submit

    async def spy(request: GenerationRequest, *, priority: Priority, **options: bool) -> GenerationStream:
        priorities.append(priority)
        return await submit(request, priority=priority, **options)

    monkeypatch.setattr(generation, "submit", spy)
    conversation = await application.conversations.create(alice, ConversationCreate())
    await _exchange(application, alice, conversation.id, "Which temples should I see in Kyoto?")
    await application.chat.titles.wait_idle()

    assert (await application.conversations.get(alice, conversation.id)).title == "Temples of Kyoto"
    assert priorities == [Priority.INTERACTIVE, Priority.BACKGROUND]
    exchange = engine.title_requests[0].messages[1].content
    assert "Which temples" in exchange and "Kyoto has many temples." in exchange

    await _exchange(application, alice, conversation.id, "And in Nara?")
    await application.chat.titles.wait_idle()
    assert len(engine.title_requests) == 1


async def test_a_rename_while_the_title_is_generated_wins(
    application: Application, alice: Principal, engine: TitlingEngine
) -> None:
    engine.title_gate.clear()
    conversation = await application.conversations.create(alice, ConversationCreate())
    await _exchange(application, alice, conversation.id, "Plan my trip")
    await application.conversations.update(alice, conversation.id, ConversationUpdate(title="My trip"))
    engine.title_gate.set()
    await application.chat.titles.wait_idle()

    assert len(engine.title_requests) == 1
    assert (await application.conversations.get(alice, conversation.id)).title == "My trip"


async def test_named_conversations_and_failed_titles_keep_their_title(
    application: Application, alice: Principal, engine: TitlingEngine
) -> None:
    named = await application.conversations.create(alice, ConversationCreate(title="Chosen"))
    await _exchange(application, alice, named.id, "hello")
    await application.chat.titles.wait_idle()
    assert engine.title_requests == []

    engine.title_error = "no titles today"
    unnamed = await application.conversations.create(alice, ConversationCreate())
    await _exchange(application, alice, unnamed.id, "first words")
    await application.chat.titles.wait_idle()
    assert len(engine.title_requests) == 1
    assert (await application.conversations.get(alice, unnamed.id)).title == "first words"


async def test_shutdown_cancels_titles_in_flight(
    application: Application, alice: Principal, engine: TitlingEngine
) -> None:
    engine.title_gate.clear()
    conversation = await application.conversations.create(alice, ConversationCreate())
    await _exchange(application, alice, conversation.id, "Plan my trip")
    await asyncio.wait_for(application.chat.aclose(), timeout=5)
    await application.chat.titles.wait_idle()
    assert (await application.conversations.get(alice, conversation.id)).title == "Plan my trip"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Temples of Kyoto."', "Temples of Kyoto"),
        ("Title: **Trip planning**\nMore text", "Trip planning"),
        ("标题：京都的寺庙。", "京都的寺庙"),
        ("\n\n  ", None),
        ("x" * 200, "x" * 79 + "…"),
    ],
)
def test_titles_are_cleaned_of_quotes_prefixes_and_punctuation(answer: str, title: str | None) -> None:
    assert clean_title(answer) == title
