"""What the model sees for a conversation turn: the system prompt and the newest messages.

Today the window is a message count (`history_limit`); fitting the history to
the model's token window is a later issue and belongs here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import MessageCreate
from ziggurat.model.engine import ChatMessage, GenerationRequest, Role, SamplingParams

_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}


def to_generation_request(
    *, model: str, system_prompt: str | None, history: Sequence[Message], message: MessageCreate
) -> GenerationRequest:
    """The generation job for a turn; `history` ends with the user message being answered."""
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage(role="system", content=system_prompt))
    messages.extend(ChatMessage(role=_ROLES[row.role], content=row.content) for row in history)
    params = SamplingParams(
        max_tokens=message.max_tokens,
        temperature=message.temperature,
    )
    return GenerationRequest(
        request_id=uuid.uuid4().hex, model=model, messages=tuple(messages), params=params
    )
