"""The context window: the newest whole turns that fit, counted with the model's tokenizer when it has one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.application.conftest import ScriptedEngine
from tests.application.conversations.conftest import consume, words
from tests.brokers import memory_broker
from ziggurat.application.auth.principal import Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.context import ContextWindow, History
from ziggurat.application.conversations.schemas import ConversationCreate, MessageCreate
from ziggurat.connection.models import StaticModels
from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import ChatMessage, ModelInfo, estimate_tokens
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics


class WordCounter:
    """One token per word, plus one per message: easy to reason about in assertions."""

    def __init__(self) -> None:
        self.calls = 0

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        self.calls += 1
        return sum(len(message.content.split()) + 1 for message in messages)


def _window(counter: WordCounter | None, *, context_length: int | None) -> tuple[ContextWindow, ModelInfo]:
    model = ModelInfo(name="m", engine="test", context_length=context_length)
    generation = GenerationService(
        broker=memory_broker(max_queue_depth=1),
        models=StaticModels([model]),
        metrics=Metrics(),
        token_counters={"m": counter} if counter is not None else None,
    )
    return ContextWindow(generation=generation, default_max_tokens=10), model


def _turns(count: int) -> list[ChatMessage]:
    """`count` exchanges of three-word messages (4 tokens each), then a final question."""
    messages: list[ChatMessage] = []
    for index in range(count):
        messages += [
            ChatMessage("user", f"question number {index}"),
            ChatMessage("assistant", f"answer number {index}"),
        ]
    return [*messages, ChatMessage("user", "the last one")]


async def test_everything_is_kept_when_it_fits() -> None:
    counter = WordCounter()
    window, model = _window(counter, context_length=100)
    fitted = await window.fit(model, system_prompt="Be brief.", history=History(_turns(3), 0), max_tokens=20)
    assert len(fitted.messages) == 8 and fitted.messages[0] == ChatMessage("system", "Be brief.")
    assert fitted.report.as_dict() == {"truncated": False, "dropped_messages": 0, "prompt_tokens": 31}
    assert counter.calls == 1


async def test_the_oldest_whole_turns_go_first_and_the_system_prompt_stays() -> None:
    counter = WordCounter()
    window, model = _window(counter, context_length=40)
    history = History(_turns(10), dropped=4)
    fitted = await window.fit(model, system_prompt="Be brief.", history=history, max_tokens=20)

    # 40 - 20 = 20 tokens of room: the system prompt (3) and the question (4) leave room for one turn (8).
    assert fitted.messages[0].role == "system" and fitted.messages[1].role == "user"
    assert fitted.messages[-1] == ChatMessage("user", "the last one")
    assert words(fitted.messages[1:3]) == [("user", "question number 9"), ("assistant", "answer number 9")]
    assert fitted.report.prompt_tokens <= 20
    assert fitted.report.as_dict() == {"truncated": True, "dropped_messages": 4 + 18, "prompt_tokens": 15}
    assert counter.calls <= 2 + 4  # the full prompt, the last turn, then a binary search over 10 turns


async def test_the_default_max_tokens_is_reserved_when_the_request_sets_none() -> None:
    window, model = _window(WordCounter(), context_length=25)
    fitted = await window.fit(model, system_prompt=None, history=History(_turns(3), 0), max_tokens=None)
    assert fitted.report.truncated and fitted.report.prompt_tokens <= 15


async def test_a_message_that_cannot_fit_alone_is_refused() -> None:
    window, model = _window(WordCounter(), context_length=30)
    huge = History([ChatMessage("user", "word " * 100)], 0)
    with pytest.raises(InvalidRequest, match="lower max_tokens") as caught:
        await window.fit(model, system_prompt=None, history=huge, max_tokens=5)
    assert caught.value.param == "content"


async def test_without_a_known_context_nothing_is_dropped_and_an_estimate_is_reported() -> None:
    window, model = _window(None, context_length=None)
    history = History(_turns(2), 0)
    fitted = await window.fit(model, system_prompt=None, history=history, max_tokens=None)
    assert not fitted.report.truncated
    assert fitted.report.prompt_tokens == estimate_tokens(history.messages)


def test_the_estimate_errs_high_for_text_without_spaces() -> None:
    ascii_only = estimate_tokens([ChatMessage("user", "a" * 400)])
    chinese = estimate_tokens([ChatMessage("user", "字" * 400)])
    assert ascii_only < 110 < 400 < chinese


@pytest.fixture
def engine() -> ScriptedEngine:
    engine = ScriptedEngine(reply="ok")
    engine._info = ModelInfo(name=engine.info.name, engine="scripted", context_length=120)
    return engine


async def test_a_long_conversation_reaches_the_model_truncated_and_the_client_is_told(
    application: Application, alice: Principal, engine: ScriptedEngine
) -> None:
    conversation = await application.conversations.create(alice, ConversationCreate())
    reports = []
    for index in range(8):
        message = MessageCreate(content=f"message {index} " + "padding " * 20, max_tokens=16)
        turn = await application.chat.post_message(alice, conversation.id, message)
        reports.append(turn.context)
        await consume(turn)

    assert reports[0] is not None and not reports[0].truncated
    last = reports[-1]
    assert (
        last is not None and last.truncated and last.dropped_messages > 0 and last.dropped_messages % 2 == 0
    )
    sent = engine.requests[-1].messages
    assert sent[0].role == "user" and sent[-1].content.startswith("message 7")
    assert len(sent) == 15 - last.dropped_messages
    assert estimate_tokens(sent) == last.prompt_tokens <= 120 - 16
