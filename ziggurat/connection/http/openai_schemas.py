"""OpenAI wire types for `/v1/chat/completions` and their conversion to ziggurat's own.

Field names follow the OpenAI API exactly; conversion happens in one function per
direction (`to_generation_request`, the `ChunkEncoder`). Unknown fields are
ignored, as OpenAI-compatible servers do, so newer SDKs keep working.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, Role, SamplingParams

MAX_STOP_SEQUENCES = 4
MAX_CONTENT_CHARS = 400_000


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=MAX_CONTENT_CHARS)] | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | list[str] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return value

    @model_validator(mode="after")
    def _has_content(self) -> ChatCompletionRequest:
        for index, message in enumerate(self.messages):
            if message.role == "user" and not message.text().strip():
                raise ValueError(f"messages[{index}].content must not be empty")
        return self


def _to_role(role: str) -> Role:
    if role in ("system", "developer"):
        return "system"
    if role == "assistant":
        return "assistant"
    return "user"


def to_generation_request(body: ChatCompletionRequest, *, request_id: str, model: str) -> GenerationRequest:
    stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if any(not stop for stop in stops):
        raise InvalidRequest("stop sequences must not be empty", param="stop")
    params = SamplingParams(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stops,
        seed=body.seed,
    )
    messages = tuple(ChatMessage(role=_to_role(m.role), content=m.text()) for m in body.messages)
    return GenerationRequest(request_id=request_id, model=model, messages=messages, params=params)


def usage_json(end: GenerationEnd) -> dict[str, int]:
    return {
        "prompt_tokens": end.usage.prompt_tokens,
        "completion_tokens": end.usage.completion_tokens,
        "total_tokens": end.usage.total_tokens,
    }


class ChunkEncoder:
    """Encodes one stream's `chat.completion.chunk` SSE frames.

    The constant head of every frame is serialised once, so each token costs one
    `orjson.dumps` of its text and a few byte concatenations.
    """

    def __init__(self, *, completion_id: str, model: str, created: int | None = None) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        head = orjson.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "system_fingerprint": None,
            }
        )
        self._head = b"data: " + head[:-1]
        self._delta_head = self._head + b',"choices":[{"index":0,"delta":{"content":'
        self._delta_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def role(self) -> bytes:
        return (
            self._head + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def delta(self, text: str) -> bytes:
        return self._delta_head + orjson.dumps(text) + self._delta_tail

    def finish(self, finish_reason: str) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]}\n\n"
        )

    def usage(self, end: GenerationEnd) -> bytes:
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage_json(end)) + b"}\n\n"


def chat_completion_json(
    *, completion_id: str, model: str, text: str, end: GenerationEnd, created: int
) -> dict[str, object]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": end.finish_reason,
            }
        ],
        "usage": usage_json(end),
    }
