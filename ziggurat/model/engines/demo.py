"""A deterministic demo engine: try the platform, load-test the gateway, no model needed.

It writes a plausible markdown reply derived from the prompt, one word-sized token
at a time, with a configurable time to first token and inter-token delay. It is
not a language model and says so in its reply and in `/v1/models`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator, Sequence

from ziggurat.model.engine import (
    ChatMessage,
    EngineStats,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)

_TOKEN_PATTERN = re.compile(r"\s*\S+|\s+")
_TOPIC_WORD = re.compile(r"[^\W\d_]{4,}|[\u4e00-\u9fff]{2,}")

_OPENINGS = (
    "Good question",
    "Here is a short overview",
    "Let me break that down",
    "Happy to help",
)


def count_tokens(text: str) -> int:
    """Word-sized tokens, the same unit the demo engine streams."""
    return len(_TOKEN_PATTERN.findall(text))


def compose_reply(prompt: str, *, seed: int | None) -> str:
    """A deterministic markdown answer about the prompt's topic words."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    words = _TOPIC_WORD.findall(prompt) or ["this"]
    topic = words[digest[0] % len(words)]
    quoted = " ".join(prompt.split())[:80] or "(empty)"
    opening = _OPENINGS[digest[1] % len(_OPENINGS)]
    points = [words[(digest[2 + i] + i) % len(words)] for i in range(3)]
    return (
        f"{opening}! *(This answer comes from ziggurat's built-in **demo engine**, "
        f"not a real language model.)*\n\n"
        f"You asked: > {quoted}\n\n"
        f"## About {topic}\n\n"
        f"1. **{points[0]}** — start with the basics and check your assumptions.\n"
        f"2. **{points[1]}** — compare a few options before you decide.\n"
        f"3. **{points[2]}** — measure the result and iterate.\n\n"
        f"| step | focus |\n|---|---|\n| 1 | {points[0]} |\n| 2 | {points[1]} |\n\n"
        f"```python\nprint({topic!r})\n```\n\n"
        f"Configure a real model with `ziggurat serve --model PATH` to get real answers."
    )


class DemoEngine:
    """Streams `compose_reply` word by word; `capacity` concurrent generations."""

    def __init__(
        self,
        *,
        served_name: str,
        capacity: int,
        time_to_first_token_s: float,
        inter_token_s: float,
        default_max_tokens: int,
    ) -> None:
        self._info = ModelInfo(
            name=served_name,
            engine="demo",
            description="Demo engine: deterministic canned markdown, not a language model.",
            context_length=32768,
            is_demo=True,
        )
        self._capacity = capacity
        self._time_to_first_token_s = time_to_first_token_s
        self._inter_token_s = inter_token_s
        self._default_max_tokens = default_max_tokens
        self.started_count = 0
        self.cancelled_count = 0
        self.active_count = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def is_ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def stats(self) -> EngineStats:
        """Generations streaming now; the demo engine has no batch, queue or KV cache."""
        return EngineStats(running=self.active_count)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The same count the demo engine reports as prompt usage."""
        return count_tokens("\n".join(message.content for message in messages)) + 3 * len(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        prompt_text = "\n".join(message.content for message in request.messages)
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), prompt_text)
        usage_prompt = await self.count_tokens(request.messages)
        max_tokens = request.params.max_tokens or self._default_max_tokens
        tokens = _skip_continuation(
            _TOKEN_PATTERN.findall(compose_reply(last_user, seed=request.params.seed)), request.continuation
        )
        self.started_count += 1
        self.active_count += 1
        emitted: list[str] = []
        try:
            await asyncio.sleep(self._time_to_first_token_s)
            finish_reason: str = "stop"
            for index, token in enumerate(tokens):
                if index >= max_tokens:
                    finish_reason = "length"
                    break
                if index:
                    await asyncio.sleep(self._inter_token_s)
                stop_at = _stop_position("".join(emitted) + token, request.params.stop)
                if stop_at is not None:
                    tail = ("".join(emitted) + token)[:stop_at][len("".join(emitted)) :]
                    if tail:
                        yield TextDelta(tail)
                    break
                emitted.append(token)
                yield TextDelta(token)
            yield GenerationEnd(
                finish_reason="length" if finish_reason == "length" else "stop",
                usage=Usage(prompt_tokens=usage_prompt, completion_tokens=len(emitted)),
            )
        except asyncio.CancelledError:
            self.cancelled_count += 1
            raise
        except GeneratorExit:
            self.cancelled_count += 1
            raise
        finally:
            self.active_count -= 1


def _skip_continuation(tokens: list[str], continuation: str) -> list[str]:
    """The tokens after `continuation` (the answer a previous worker already sent)."""
    if not continuation:
        return tokens
    answer = "".join(tokens)
    if not answer.startswith(continuation):
        return tokens  # not our answer's beginning (the prompt changed?): nothing sensible to skip
    return _TOKEN_PATTERN.findall(answer[len(continuation) :])


def _stop_position(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return min(positions) if positions else None
