"""`GenerationService.count_tokens`: the engine's own count where it has one, an estimate otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from tests.brokers import memory_broker
from ziggurat.connection.models import StaticModels
from ziggurat.model.engine import ChatMessage, ModelInfo, estimate_tokens
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics

MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "How tall is the ziggurat of Ur?"))


class FixedCounter:
    def __init__(self, count: int | None) -> None:
        self.count = count

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        return self.count


def _service(counter: FixedCounter | None) -> GenerationService:
    return GenerationService(
        broker=memory_broker(max_queue_depth=1),
        models=StaticModels([ModelInfo(name="m", engine="test"), ModelInfo(name="remote", engine="test")]),
        metrics=Metrics(),
        token_counters={"m": counter} if counter is not None else None,
    )


async def test_the_engines_count_is_used_when_it_has_one() -> None:
    assert await _service(FixedCounter(42)).count_tokens("m", MESSAGES) == 42


async def test_an_estimate_stands_in_for_engines_that_cannot_count() -> None:
    assert await _service(FixedCounter(None)).count_tokens("m", MESSAGES) == estimate_tokens(MESSAGES)
    assert await _service(FixedCounter(42)).count_tokens("remote", MESSAGES) == estimate_tokens(MESSAGES)
    assert await _service(None).count_tokens("m", MESSAGES) == estimate_tokens(MESSAGES)
