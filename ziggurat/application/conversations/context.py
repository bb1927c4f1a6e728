"""What the model sees for a turn: the parameters, the system prompt and the history that fits.

Parameters come from the message when it sets them, else the conversation,
else its preset (`resolve_parameters`). The history is the conversation's
shown path only, never other branches, and leaves out failed or empty
replies, which the model should not imitate.

`ContextWindow.fit` keeps the system prompt plus the newest whole turns whose
tokens, counted with the model's tokenizer where the engine can (an estimate
otherwise), fit the model's context minus the tokens reserved for the answer
(`max_tokens`, or the engine default). It binary-searches the first turn to
keep, so a long conversation costs a few counts, not one per message. A
message that cannot fit even alone is refused before anything is stored.
Older turns are dropped, not summarised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.conversations.schemas import GenerationOverrides
from ziggurat.application.presets.models import Preset
from ziggurat.errors import InvalidRequest
from ziggurat.ids import new_id_hex
from ziggurat.model.engine import ChatMessage, GenerationRequest, ModelInfo, Role, SamplingParams
from ziggurat.service.generation import GenerationService

_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}


# Picks the model a principal asked for (or the default one), refusing models it may not use.
ModelResolver = Callable[[Principal, str | None], Awaitable[ModelInfo]]


def any_served_model(generation: GenerationService) -> ModelResolver:
    """A resolver that lets every principal use every served model (when no catalog decides)."""

    async def resolve(principal: Principal, name: str | None) -> ModelInfo:
        return generation.resolve_model(name)

    return resolve


@dataclass(slots=True, frozen=True)
class TurnParameters:
    model: str | None
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None


def resolve_parameters(
    conversation: Conversation, preset: Preset | None, overrides: GenerationOverrides
) -> TurnParameters:
    """Message first, then conversation, then preset; None leaves the choice to the engine."""
    temperature = overrides.temperature
    if temperature is None and preset is not None:
        temperature = preset.temperature
    max_tokens = overrides.max_tokens
    if max_tokens is None and preset is not None:
        max_tokens = preset.max_tokens
    return TurnParameters(
        model=overrides.model or conversation.model or (preset.model if preset else None),
        system_prompt=conversation.system_prompt or (preset.system_prompt if preset else None),
        temperature=temperature,
        max_tokens=max_tokens,
    )


def is_shown_to_model(message: Message) -> bool:
    if message.role == "assistant":
        return message.status in ("complete", "cancelled") and message.content != ""
    return message.role == "user"


@dataclass(slots=True, frozen=True)
class History:
    messages: list[ChatMessage]
    dropped: int


def history_of(path: Sequence[Message], *, limit: int) -> History:
    """The chat messages of a path (ending with the user message being answered), newest `limit`."""
    shown = [
        ChatMessage(role=_ROLES[row.role], content=row.content) for row in path if is_shown_to_model(row)
    ]
    return History(messages=shown[-limit:], dropped=max(0, len(shown) - limit))


@dataclass(slots=True, frozen=True)
class ContextReport:
    """Told to the client in the `message` event: what of the history reached the model."""

    truncated: bool
    dropped_messages: int
    prompt_tokens: int

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "truncated": self.truncated,
            "dropped_messages": self.dropped_messages,
            "prompt_tokens": self.prompt_tokens,
        }


@dataclass(slots=True, frozen=True)
class FittedPrompt:
    messages: tuple[ChatMessage, ...]
    report: ContextReport


class ContextWindow:
    """Fits a turn's history into the model's context window."""

    def __init__(self, *, generation: GenerationService, default_max_tokens: int) -> None:
        self._generation = generation
        self._default_max_tokens = default_max_tokens

    async def fit(
        self,
        model: ModelInfo,
        *,
        system_prompt: str | None,
        history: History,
        max_tokens: int | None,
    ) -> FittedPrompt:
        """Fit `history`, which ends with the user message to answer."""
        messages = history.messages
        system = (ChatMessage(role="system", content=system_prompt),) if system_prompt else ()

        async def count(start: int) -> int:
            return await self._generation.count_tokens(model.name, (*system, *messages[start:]))

        starts = [index for index, message in enumerate(messages) if message.role == "user"] or [0]
        tokens = await count(starts[0])
        reserve = max_tokens or self._default_max_tokens
        budget = None if model.context_length is None else model.context_length - reserve
        if budget is not None and tokens > budget:
            tokens, kept = await self._drop_oldest(count, starts, budget)
            if kept is None:
                raise InvalidRequest(
                    f"The message and system prompt take {tokens} tokens, more than the {budget} the model "
                    f"'{model.name}' has room for (its context of {model.context_length} tokens minus "
                    f"{reserve} for the answer); shorten it or lower max_tokens.",
                    param="content",
                )
            starts = [kept]
        dropped = history.dropped + starts[0]
        report = ContextReport(truncated=dropped > 0, dropped_messages=dropped, prompt_tokens=tokens)
        return FittedPrompt(messages=(*system, *messages[starts[0] :]), report=report)

    @staticmethod
    async def _drop_oldest(
        count: Callable[[int], Awaitable[int]], starts: list[int], budget: int
    ) -> tuple[int, int | None]:
        """The first turn start whose suffix fits (and its tokens), or None and the last turn's tokens."""
        last_tokens = await count(starts[-1])
        if last_tokens > budget:
            return last_tokens, None
        # starts[0] does not fit and starts[high] does; keeping fewer turns never costs more tokens.
        low, high = 1, len(starts) - 1
        best = last_tokens
        while low < high:
            middle = (low + high) // 2
            tokens = await count(starts[middle])
            if tokens <= budget:
                high, best = middle, tokens
            else:
                low = middle + 1
        return best, starts[high]


def to_generation_request(
    *, model: str, messages: Sequence[ChatMessage], parameters: TurnParameters, request_id: str | None = None
) -> GenerationRequest:
    params = SamplingParams(max_tokens=parameters.max_tokens, temperature=parameters.temperature)
    return GenerationRequest(
        request_id=request_id or new_id_hex(), model=model, messages=tuple(messages), params=params
    )
