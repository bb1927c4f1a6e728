"""OpenAI-compatible routes: `/v1/chat/completions` and `/v1/models`.

Authenticated by API key (or a JWT access token) as `Authorization: Bearer`.
Streams use the exact chunk format of the OpenAI API, so the official SDKs and
tools built on them work unchanged. Once a stream has started, an error is sent
as a final `data: {"error": ...}` event followed by `[DONE]`. Models come from
the application's `ModelCatalog`, so a role sees and uses only its models (one
it may not use is `404 model_not_found`, like one that does not exist), and
each finished generation's token usage goes to the `UsageRecorder`. The
caller's rate limits and quotas are checked on submit (`429` with
`Retry-After`), and every answer carries the `x-ratelimit-*` headers of the
limits in force, as OpenAI's do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ziggurat.connection.broker.base import Priority
from ziggurat.connection.http.deps import ApplicationDep, ChatPrincipalDep, get_chat_call
from ziggurat.connection.http.errors import body_for
from ziggurat.connection.http.openai_schemas import (
    ChatCompletionRequest,
    ChunkEncoder,
    chat_completion_json,
    to_generation_request,
)
from ziggurat.connection.http.raw_body import json_body_openapi, parse_json_body
from ziggurat.connection.http.sse import DONE, FinalFrame, encode_event, sse_response
from ziggurat.errors import UpstreamFailed
from ziggurat.ids import new_id_hex
from ziggurat.model.engine import GenerationEnd, TextDelta, TokenLogprob, Usage
from ziggurat.service.answer_reading import NO_RESULT
from ziggurat.service.answer_stream import AnswerStream

CACHE_HEADER = "x-ziggurat-cache"
"""`hit` (served from the response cache), `miss` (cacheable, generated now) or `bypass`."""

router = APIRouter(prefix="/v1", tags=["openai"])
BODY_MODELS = (ChatCompletionRequest,)
"""Bodies this router parses itself (`raw_body.py`): the app adds them to its OpenAPI components."""


@router.get("/models")
async def list_models(principal: ChatPrincipalDep, application: ApplicationDep) -> dict[str, Any]:
    models = [
        {
            "id": model.info.name,
            "object": "model",
            "created": 0,
            "owned_by": model.info.owned_by,
            "engine": model.info.engine,
            "is_demo": model.info.is_demo,
            "description": model.description,
            "context_length": model.context_length,
        }
        for model in await application.catalog.list_models(principal)
    ]
    return {"object": "list", "data": models}


@router.post("/chat/completions", response_model=None, openapi_extra=json_body_openapi(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    # No FastAPI parameters on the hottest route (see raw_body.py); the caller first, so a
    # caller without credentials gets 401 whatever the body.
    call = await get_chat_call(request)
    body = await parse_json_body(request, ChatCompletionRequest)
    principal, application, generation = call.principal, call.application, call.generation
    model = await application.catalog.resolve(principal, body.model)
    record_usage = partial(application.usage.record, principal, model.name)
    completion_id = "chatcmpl-" + new_id_hex()
    job = to_generation_request(body, request_id=completion_id, model=model.name)
    stream = await generation.submit(
        job,
        priority=Priority.API,
        cache_scope=generation.cache_scope(principal.user_id),
        limits=application.limits.subject_for(principal),
    )
    encoder = ChunkEncoder(completion_id=completion_id, model=model.name)
    headers = {CACHE_HEADER: stream.cache_status, **stream.rate_limit}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(
            stream_chunks(stream, encoder, include_usage=include_usage, on_end=record_usage),
            headers=headers,
        )
    if body.logprobs:
        text, end, logprobs = await collect_with_logprobs(stream)
    else:
        (text, end), logprobs = await stream.collect(), None
    record_usage(end.usage)
    if end.finish_reason == "error":
        raise UpstreamFailed(end.error or "The model failed while generating this answer.")
    return json_response(
        chat_completion_json(
            completion_id=completion_id,
            model=model.name,
            text=text,
            end=end,
            created=encoder.created,
            logprobs=logprobs,
        ),
        headers=headers,
    )


async def collect_with_logprobs(stream: AnswerStream) -> tuple[str, GenerationEnd, list[TokenLogprob] | None]:
    """The whole answer, its end and its tokens' logprobs (None when the engine gave none)."""
    parts: list[str] = []
    logprobs: list[TokenLogprob] | None = None
    async with aclosing(stream.events()) as events:
        async for event in events:
            if isinstance(event, GenerationEnd):
                return "".join(parts), event, logprobs
            parts.append(event.text)
            if event.logprobs is not None:
                logprobs = logprobs if logprobs is not None else []
                logprobs.extend(event.logprobs)
    raise UpstreamFailed(NO_RESULT)


def json_response(payload: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


async def stream_chunks(
    stream: AnswerStream,
    encoder: ChunkEncoder,
    *,
    include_usage: bool,
    on_end: Callable[[Usage], None] | None = None,
) -> AsyncIterator[bytes]:
    """OpenAI chunk frames for one job. Leaving early (client gone) cancels the job.

    The role frame goes out with the first event's frame, and the last frames with the
    end of the body (`FinalFrame`): two writes fewer per stream.
    """
    head = encoder.role()
    # Entries rather than `events()`: one generator layer fewer per flush.
    async with aclosing(stream.entries()) as entries:
        async for entry in entries:
            event = entry.event
            if isinstance(event, TextDelta):
                if event.logprobs is None:
                    frame = encoder.delta(event.text)
                else:
                    frame = encoder.delta_with_logprobs(event.text, event.logprobs)
                if head:
                    frame, head = head + frame, b""
                yield frame
            elif isinstance(event, GenerationEnd):
                if on_end is not None:
                    on_end(event.usage)
                # The last frames leave in one write: each write is a send() through the whole stack.
                if event.finish_reason == "error":
                    failure = UpstreamFailed(event.error or "The model failed while generating this answer.")
                    yield FinalFrame(head + encode_event(body_for(failure)) + DONE)
                elif include_usage:
                    yield FinalFrame(head + encoder.finish(event.finish_reason) + encoder.usage(event) + DONE)
                else:
                    yield FinalFrame(head + encoder.finish(event.finish_reason) + DONE)
                return
    yield FinalFrame(head + DONE)
