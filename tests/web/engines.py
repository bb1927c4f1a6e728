"""A scripted engine for the browser tests: fast, deterministic, and able to say it was cancelled.

The reply depends on the last user message, so one server can play every scenario:
a message containing `xss` gets an answer full of HTML that must never run, one
containing `slow` streams for long enough to be stopped, and anything else gets
a short markdown answer (heading, list, table, code) streamed over about a second,
so a test can watch it arrive. A message starting with `echo` is answered with
itself (each branch of an edited message gets its own answer), and one containing
`math` with TeX.

It serves a second model, `MODEL_TERSE`, the way an engine serves a LoRA adapter
(`AdapterHost`), so the model picker has something to filter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from tests.stub_engine import StubEngine
from ziggurat.model.adapters import AdapterInfo, adapter_model_name
from ziggurat.model.engine import (
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)

MODEL = "scripted-web"
MODEL_TERSE = adapter_model_name(MODEL, "terse")

MATH_REPLY = (
    "Energy: $E=mc^2$ and a sum:\n\n$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$\n\n"
    "A trap: $\\href{javascript:window.__pwned=5}{click}$ and "
    "$\\htmlClass{x}{y}$ done. Price: $5 and $10. END-OF-MATH"
)

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


class WebScriptedEngine(StubEngine):
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

    def served_models(self) -> list[ModelInfo]:
        terse = ModelInfo(
            name=MODEL_TERSE, engine="scripted", description="The script again", base_model=MODEL
        )
        return [self._info, terse]

    def adapters(self) -> list[AdapterInfo]:
        return [AdapterInfo(name="terse", model=MODEL_TERSE, path="(scripted)")]

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        raise NotImplementedError("the scripted engine's adapters are fixed")

    async def unload_adapter(self, name: str) -> None:
        raise NotImplementedError("the scripted engine's adapters are fixed")

    def reply_for(self, prompt: str) -> tuple[str, float]:
        lowered = prompt.lower()
        if lowered.startswith("echo"):
            return f"You said: {prompt}", 0.005
        if "math" in lowered:
            return MATH_REPLY, 0.005
        if "xss" in lowered:
            return XSS_REPLY, 0.005
        if "resume" in lowered:
            return RESUME_REPLY, 0.025
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
