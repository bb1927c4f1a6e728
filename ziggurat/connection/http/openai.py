"""OpenAI-compatible routes: `/v1/chat/completions` and `/v1/models`.

Authenticated by API key (or a JWT access token) as `Authorization: Bearer`.
Streams use the exact chunk format of the OpenAI API, so the official SDKs and
tools built on them work unchanged. Once a stream has started, an error is sent
as a final `data: {"error": ...}` event followed by `[DONE]`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ziggurat.connection.broker.base import Priority
from ziggurat.connection.http.deps import ChatPrincipalDep, GenerationDep
from ziggurat.connection.http.errors import body_for
from ziggurat.connection.http.openai_schemas import (
    ChatCompletionRequest,
    ChunkEncoder,
    chat_completion_json,
    to_generation_request,
)
from ziggurat.connection.http.sse import DONE, encode_event, sse_response
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationEnd, TextDelta
from ziggurat.service.generation import GenerationStream

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(principal: ChatPrincipalDep, generation: GenerationDep) -> dict[str, Any]:
    models = [
        {
            "id": model.name,
            "object": "model",
            "created": 0,
            "owned_by": model.owned_by,
            "engine": model.engine,
            "is_demo": model.is_demo,
            "description": model.description,
            "context_length": model.context_length,
        }
        for model in generation.list_models()
    ]
    return {"object": "list", "data": models}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: ChatPrincipalDep, generation: GenerationDep
) -> Response:
    model = generation.resolve_model(body.model)
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    job = to_generation_request(body, request_id=completion_id, model=model.name)
    stream = await generation.submit(job, priority=Priority.API)
    encoder = ChunkEncoder(completion_id=completion_id, model=model.name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(stream_chunks(stream, encoder, include_usage=include_usage))
    text, end = await stream.collect()
    if end.finish_reason == "error":
        raise UpstreamFailed(end.error or "The model failed while generating this answer.")
    return json_response(
        chat_completion_json(
            completion_id=completion_id, model=model.name, text=text, end=end, created=encoder.created
        )
    )


def json_response(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


async def stream_chunks(
    stream: GenerationStream, encoder: ChunkEncoder, *, include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI chunk frames for one job. Leaving early (client gone) cancels the job."""
    yield encoder.role()
    async with aclosing(stream.events()) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                yield encoder.delta(event.text)
            elif isinstance(event, GenerationEnd):
                if event.finish_reason == "error":
                    failure = UpstreamFailed(event.error or "The model failed while generating this answer.")
                    yield encode_event(body_for(failure))
                else:
                    yield encoder.finish(event.finish_reason)
                    if include_usage:
                        yield encoder.usage(event)
    yield DONE
