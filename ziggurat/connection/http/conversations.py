"""Conversations under `/api/conversations`: list, search, read, change, delete, and chat.

Posting, editing and regenerating answer with a server-sent event stream:
`message` (the stored user message, the reply's id, and `context`: whether
older history had to be left out to fit the model's window), `delta`s
(`{"content": ...}`), then `done` (the stored reply) or, if it fails after the
stream started, `error` with the usual error body. Unlike `/v1`, no `[DONE]`
line follows: these events are named, and a bare `data: [DONE]` would reach
browser `EventSource` listeners as a `message` event.

Each `delta` carries an SSE `id`: a client that loses the connection resumes
with `GET /api/messages/{reply_id}/stream` and `Last-Event-ID` (any gateway),
because leaving a stream does not stop the reply: it goes on being generated
and stored. `POST .../stop` stops it, from any connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query
from starlette.responses import Response

from ziggurat.application.conversations.models import IDEMPOTENCY_KEY_MAX_LENGTH
from ziggurat.application.conversations.schemas import (
    MAX_PAGE_SIZE,
    MAX_SEARCH_QUERY_CHARS,
    MAX_SEARCH_RESULTS,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    GenerationOverrides,
    MessageCreate,
    MessageOut,
    SearchResults,
)
from ziggurat.application.conversations.turn import ChatTurn, TurnDelta
from ziggurat.connection.http.deps import ApplicationDep, ChatPrincipalDep
from ziggurat.connection.http.errors import body_for, error_body
from ziggurat.connection.http.sse import encode_event, sse_response
from ziggurat.errors import ZigguratError
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/api/conversations", tags=["conversations"])

ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
]


@router.post("", status_code=201)
async def create_conversation(
    body: ConversationCreate, principal: ChatPrincipalDep, application: ApplicationDep
) -> ConversationOut:
    return await application.conversations.create(principal, body)


@router.get("")
async def list_conversations(
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    archived: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ConversationPage:
    return await application.conversations.list_conversations(
        principal, archived=archived, limit=limit, cursor=cursor
    )


@router.get("/search")
async def search_conversations(
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_SEARCH_QUERY_CHARS)],
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_RESULTS)] = 20,
) -> SearchResults:
    return await application.conversations.search(principal, q, limit=limit)


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: ResourceId, principal: ChatPrincipalDep, application: ApplicationDep
) -> ConversationDetail:
    return await application.conversations.get(principal, conversation_id)


@router.patch("/{conversation_id}")
async def update_conversation(
    conversation_id: ResourceId,
    body: ConversationUpdate,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
) -> ConversationOut:
    return await application.conversations.update(principal, conversation_id, body)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: ResourceId, principal: ChatPrincipalDep, application: ApplicationDep
) -> Response:
    await application.conversations.delete(principal, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", response_model=None)
async def post_message(
    conversation_id: ResourceId,
    body: MessageCreate,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    turn = await application.chat.post_message(principal, conversation_id, body, idempotency_key)
    return sse_response(stream_turn(turn))


@router.post("/{conversation_id}/messages/{message_id}/edit", response_model=None)
async def edit_message(
    conversation_id: ResourceId,
    message_id: ResourceId,
    body: MessageCreate,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A new version of your message beside the old one (a new branch), answered like a new message."""
    turn = await application.chat.edit_message(principal, conversation_id, message_id, body, idempotency_key)
    return sse_response(stream_turn(turn))


@router.post("/{conversation_id}/messages/{message_id}/regenerate", response_model=None)
async def regenerate_reply(
    conversation_id: ResourceId,
    message_id: ResourceId,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    body: Annotated[GenerationOverrides | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Another answer to the same message, beside this one."""
    overrides = body or GenerationOverrides()
    turn = await application.chat.regenerate(
        principal, conversation_id, message_id, overrides, idempotency_key
    )
    return sse_response(stream_turn(turn))


@router.post("/{conversation_id}/messages/{message_id}/select")
async def select_branch(
    conversation_id: ResourceId,
    message_id: ResourceId,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
) -> ConversationDetail:
    """Show the branch through this message (for `‹ 2/3 ›`: select one of `sibling_ids`)."""
    return await application.conversations.select_branch(principal, conversation_id, message_id)


@router.post("/{conversation_id}/messages/{message_id}/stop")
async def stop_reply(
    conversation_id: ResourceId,
    message_id: ResourceId,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
) -> MessageOut:
    """Stop a reply being generated; its partial text is kept with status `cancelled`."""
    return await application.chat.stop(principal, conversation_id, message_id)


async def stream_turn(turn: ChatTurn) -> AsyncIterator[bytes]:
    """The SSE frames of one turn (or of a resumed reply, which has no `message` event)."""
    try:
        if turn.user_message is not None:
            started = {
                "user_message": turn.user_message.model_dump(mode="json"),
                "assistant_message_id": turn.reply_id,
                "replayed": turn.is_replay,
                "context": turn.context.as_dict() if turn.context is not None else None,
            }
            yield encode_event(started, event="message")
        async with aclosing(turn.events()) as events:
            async for event in events:
                if isinstance(event, TurnDelta):
                    yield encode_event({"content": event.text}, event="delta", event_id=event.entry_id)
                else:
                    yield encode_event(event.message.model_dump(mode="json"), event="done")
    except ZigguratError as exc:
        yield encode_event(body_for(exc), event="error")
    except Exception as exc:  # the stream's 500 handler: the status line is already sent
        log.exception("stream_failed", error_type=type(exc).__name__)
        failure = error_body("The server had an error while processing your request.", "server_error")
        yield encode_event(failure, event="error")
    finally:
        await turn.aclose()
