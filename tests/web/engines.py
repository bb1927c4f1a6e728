"""A scripted engine for the browser tests: fast, deterministic, and able to say it was cancelled.

The reply depends on the last user message, so one server can play every scenario:
a message containing `xss` gets an answer full of HTML that must never run, one
containing `slow` streams for long enough to be stopped, and anything else gets
a short markdown answer (heading, list, table, code) streamed over about a second,
so a test can watch it arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from ziggurat.model.engine import (
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)

MODEL = "scripted-web"

XSS_REPLY = (
    'Here is a picture <img src=x onerror="window.__pwned = 1; alert(1)"> and a script '
    "<script>window.__pwned = 2; alert(2)</script> and a [link](javascript:window.__pwned=3) "
    'and a block:\n\n<div onmouseover="window.__pwned=4">hover me</div>\n\nEND-OF-XSS'
)

MARKDOWN_REPLY = (
    "## Ziggurats\n\nA ziggurat is a stepped temple tower. Three facts:\n\n"
    "1. **Mud brick** cores with baked brick facing.\n2. A shrine on top.\n3. Built in Mesopotamia.\n\n"
    "| city | tower |\n|---|---|\n| Ur | Great Ziggurat |\n| Babylon | Etemenanki |\n\n"
    "```python\ndef height(levels: int) -> int:\n    return levels * 11\n```\n\nEND-OF-ANSWER"
)

RESUME_REPLY = " ".join(f"part{i}" for i in range(80)) + " END-OF-RESUME"


def _tokens(text: str) -> list[str]:
    """Word-sized pieces that keep the text's own whitespace (newlines matter in markdown)."""
    pieces: list[str] = []
    word = ""
    for char in text:
        if char.isspace() and word and not word.isspace():
            pieces.append(word)
            word = ""
        word += char
    pieces.append(word)
    return pieces


class WebScriptedEngine:
    def __init__(self) -> None:
        self._info = ModelInfo(name=MODEL, engine="scripted", description="Browser-test script")
        self.inter_token_s = 0.025
        self.slow_inter_token_s = 0.15
        self.started = 0
        self.cancelled = 0
        self.completed = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def capacity(self) -> int:
        return 8

    @property
    def is_ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def reply_for(self, prompt: str) -> tuple[str, float]:
        lowered = prompt.lower()
        if "xss" in lowered:
            return XSS_REPLY, 0.005
        if "resume" in lowered:
            return RESUME_REPLY, 0.04
        if "slow" in lowered:
            return " ".join(f"word{i}" for i in range(400)), self.slow_inter_token_s
        return MARKDOWN_REPLY, self.inter_token_s

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        reply, delay = self.reply_for(prompt)
        pieces = _tokens(reply)
        self.started += 1
        finished = False
        try:
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(delay)
                yield TextDelta(piece)
            finished = True
            self.completed += 1
            yield GenerationEnd(
                "stop", Usage(prompt_tokens=len(prompt.split()), completion_tokens=len(pieces))
            )
        finally:
            if not finished:
                self.cancelled += 1
