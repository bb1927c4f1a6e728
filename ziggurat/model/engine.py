"""The `Engine` interface and the types that flow through it.

An engine turns one `GenerationRequest` into an async stream of `TextDelta`s that
ends with exactly one `GenerationEnd` (finish reason and token usage). Cancelling
the consuming task (or closing the iterator) must free the engine slot within one
decode step: that is how a client disconnect reaches the model.

Engines do not know about HTTP, users, queues or settings objects; they receive
plain values in their constructors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(slots=True, frozen=True)
class SamplingParams:
    """Decoding controls. `temperature == 0` means greedy decoding.

    `None` means "not set by the client": the engine applies the model's own
    defaults (its generation config), else temperature 1 and top_p 1.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int | None = None
    """Keep only the k most likely tokens before sampling; None or 0: no limit."""
    repetition_penalty: float | None = None
    """Multiplicative penalty (>1 discourages) on tokens already in the prompt or answer (HF/vLLM sense)."""
    frequency_penalty: float | None = None
    """OpenAI sense: subtract `penalty * count` from the logit of each token already generated."""
    presence_penalty: float | None = None
    """OpenAI sense: subtract `penalty` from the logit of each token generated at least once."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end the answer (like the model's own end-of-sequence tokens)."""
    logprobs: bool = False
    """Report the chosen token's log-probability with each delta."""
    top_logprobs: int = 0
    """With `logprobs`: also report this many most likely alternatives per token (0 to 20)."""


@dataclass(slots=True, frozen=True)
class GenerationRequest:
    request_id: str
    model: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    continuation: str = ""
    """The start of the answer, already sent to the client by a worker that died: the engine
    generates what follows it (and only that), so the client sees one seamless answer."""


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    """One generated token's log-probability, with the most likely alternatives if asked for."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of the answer. Always a complete UTF-8 string (never half a character).

    `logprobs` is set only when the request asked for them: one entry per token in `text`.
    `tokens` is how many tokens the text carries: an engine that hands several over at
    once (merged while its consumer was busy, or read in one slice) adds them up, so
    usage estimates and resumed budgets count tokens, not deltas.
    """

    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    tokens: int = 1


@dataclass(slots=True, frozen=True)
class GenerationEnd:
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None


GenerationEvent = TextDelta | GenerationEnd


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """How an engine's model is presented to clients (`/v1/models`)."""

    name: str
    engine: str
    owned_by: str = "ziggurat"
    description: str = ""
    context_length: int | None = None
    is_demo: bool = False
    base_model: str | None = None
    """For a LoRA adapter served as `base:adapter`: the base model, whose workers run it."""


class Engine(Protocol):
    """One loaded model. Safe to call `generate` concurrently up to `capacity` times."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def capacity(self) -> int:
        """How many generations may run at once (the worker takes no more jobs than this)."""
        ...

    @property
    def is_ready(self) -> bool: ...

    async def start(self) -> None:
        """Load weights / open connections. Called once before the first `generate`."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class VaryingCapacity(Protocol):
    """An optional engine capability: a capacity that changes over time (a remote server's load).

    `Engine.capacity` stays the most the engine ever runs (the queue's prefetch);
    `available_capacity` is how many it should run now, and `capacity_changed`
    returns when that changes, so a full worker sleeps instead of polling.
    """

    @property
    def available_capacity(self) -> int: ...

    async def capacity_changed(self) -> None: ...


def capacity_now(engine: object) -> int | None:
    """How many generations `engine` should run now: its live capacity where it has one.

    The worker's room, load shedding and the workers' advertisements read this, so
    a remote server that reports a full queue or KV cache makes the gateway shed
    sooner, not only the worker pull less. None for an object that is not an engine.
    Attributes are read rather than `isinstance(engine, VaryingCapacity)` asked:
    a runtime protocol check costs ~20 µs, and shedding asks on every request.
    """
    for name in ("available_capacity", "capacity"):
        capacity = getattr(engine, name, None)
        if isinstance(capacity, int):
            return capacity
    return None


@runtime_checkable
class TokenCounter(Protocol):
    """An optional engine capability: the prompt length of `messages` in the model's tokens.

    Counts what `generate` would feed the model (chat template included).
    Returns None when the engine cannot tell yet, for example before its
    tokenizer is loaded; callers then fall back to `estimate_tokens`.
    """

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None: ...


@dataclass(slots=True, frozen=True)
class EngineStats:
    """A reading of an engine's scheduler for metrics; None where the engine cannot tell.

    `running`: generations holding a slot now. `waiting`: accepted by the engine
    but not yet running. `batch_size`: sequences in the latest forward pass.
    `kv_cache_usage`: the fraction (0 to 1) of the engine's KV-cache budget in use.
    """

    running: int
    waiting: int | None = None
    batch_size: int | None = None
    kv_cache_usage: float | None = None


@runtime_checkable
class StatsReporter(Protocol):
    """An optional engine capability: a cheap, non-blocking reading of its scheduler (read at scrape time)."""

    def stats(self) -> EngineStats: ...


@runtime_checkable
class PacedReader(Protocol):
    """An optional engine capability: it coalesces its own output after the first text.

    Such an engine hands over what arrived once per `read_interval_s` (0: as it
    arrives), so the worker need not hold text back again before writing it.
    """

    @property
    def read_interval_s(self) -> float: ...


@dataclass(slots=True, frozen=True)
class EndpointStats:
    """A reading of one server behind a remote engine (for metrics); None where the server cannot tell.

    `endpoint`: its URL without credentials. `limit`: how many generations the engine
    sends it now (its share of the capacity). `breaker`: `closed`, `open` or `half_open`.
    """

    endpoint: str
    is_healthy: bool
    breaker: str
    in_flight: int
    limit: int
    running: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None


@runtime_checkable
class EndpointReporter(Protocol):
    """An optional capability of engines in front of several servers: a reading of each (at scrape time)."""

    def endpoint_stats(self) -> Sequence[EndpointStats]: ...


_ASCII_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A tokenizer-free estimate that errs high: ASCII at four characters a token, other
    characters (CJK, emoji) at one token each, plus a few tokens of role markers per message."""
    total = 2
    for message in messages:
        ascii_chars = sum(1 for char in message.content if char.isascii())
        other_chars = len(message.content) - ascii_chars
        total += -(-ascii_chars // _ASCII_CHARS_PER_TOKEN) + other_chars + _TOKENS_PER_MESSAGE
    return total
