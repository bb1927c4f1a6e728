"""A named, scriptable engine for routing tests: fails, stalls or answers on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tests.stub_engine import StubEngine
from ziggurat.model.engine import (
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)


class RoutedEngine(StubEngine):
    """Streams `reply` word by word as model `name`.

    `failures`: how many of the next requests end with an error before any text.
    `first_token_delay_s`: a pause before the first token (a slow or stuck model).
    `fail_after_first_token`: the answer breaks after its first word.
    `started` is set by the first request; `cancelled` counts generations stopped from outside.
    """

    def __init__(self, name: str, *, reply: str | None = None, inter_token_s: float = 0.0) -> None:
        self.reply = reply or f"Answer from {name} in a few words"
        self.inter_token_s = inter_token_s
        self.failures = 0
        self.first_token_delay_s = 0.0
        self.fail_after_first_token = False
        self.requests: list[GenerationRequest] = []
        self.cancelled = 0
        self.started = asyncio.Event()
        self._info = ModelInfo(name=name, engine="routed")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)
        self.started.set()
        try:
            if self.failures > 0:
                self.failures -= 1
                yield GenerationEnd("error", Usage(0, 0), error=f"{self._info.name} failed")
                return
            await asyncio.sleep(self.first_token_delay_s)
            words = self.reply.split(" ")
            for index, word in enumerate(words):
                if index:
                    await asyncio.sleep(self.inter_token_s)
                yield TextDelta(word if index == 0 else " " + word)
                if self.fail_after_first_token:
                    yield GenerationEnd("error", Usage(0, 1), error=f"{self._info.name} broke")
                    return
            yield GenerationEnd("stop", Usage(prompt_tokens=3, completion_tokens=len(words)))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
