"""OpenAI wire types for `/v1/chat/completions` and their conversion to ziggurat's own.

Field names follow the OpenAI API exactly; conversion happens in one function per
direction (`to_generation_request`, the `ChunkEncoder`). Unknown fields are
ignored, as OpenAI-compatible servers do, so newer SDKs keep working.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationRequest,
    Role,
    SamplingParams,
    TokenLogprob,
)

MAX_STOP_SEQUENCES = 4
MAX_CONTENT_CHARS = 400_000
MAX_TOP_LOGPROBS = 20
MAX_TOP_K = 1_000_000
MAX_STOP_TOKEN_IDS = 64
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


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
    # Beyond OpenAI's own set, as vLLM and SGLang accept them (top-level fields, same names).
    top_k: Annotated[int, Field(ge=-1, le=MAX_TOP_K)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=MAX_STOP_TOKEN_IDS)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return value

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

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
        top_k=body.top_k if body.top_k is not None and body.top_k > 0 else None,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        stop_token_ids=tuple(body.stop_token_ids or ()),
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
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

    def delta_with_logprobs(self, text: str, logprobs: Sequence[TokenLogprob]) -> bytes:
        """A delta that carries its tokens' logprobs (only requests that asked for them come here)."""
        return (
            self._delta_head
            + orjson.dumps(text)
            + b'},"logprobs":'
            + orjson.dumps(logprobs_json(logprobs))
            + b',"finish_reason":null}]}\n\n'
        )

    def finish(self, finish_reason: str) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]}\n\n"
        )

    def usage(self, end: GenerationEnd) -> bytes:
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage_json(end)) + b"}\n\n"


def logprobs_json(logprobs: Sequence[TokenLogprob]) -> dict[str, object]:
    """A choice's `logprobs` object as OpenAI writes it; `bytes` is each token's UTF-8 encoding."""
    return {
        "content": [
            {
                "token": item.token,
                "logprob": item.logprob,
                "bytes": list(item.token.encode()),
                "top_logprobs": [
                    {"token": token, "logprob": logprob, "bytes": list(token.encode())}
                    for token, logprob in item.top
                ],
            }
            for item in logprobs
        ],
        "refusal": None,
    }


def chat_completion_json(
    *,
    completion_id: str,
    model: str,
    text: str,
    end: GenerationEnd,
    created: int,
    logprobs: Sequence[TokenLogprob] | None = None,
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
                "logprobs": logprobs_json(logprobs) if logprobs is not None else None,
                "finish_reason": end.finish_reason,
            }
        ],
        "usage": usage_json(end),
    }
