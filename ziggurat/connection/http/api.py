"""The app API under `/api`: accounts, sessions, API keys and conversations.

Browsers sign in for a short-lived JWT access token plus a refresh token;
programs use API keys. Both go in `Authorization: Bearer`. Posting a message
answers with a server-sent event stream: `message` (the stored user message
and the reply's id), `delta`s (`{"content": ...}`), then `done` (the stored
reply) or, if it fails after the stream started, `error` with the usual error
body. Unlike `/v1`, no `[DONE]` line follows: these events are named, and a
bare `data: [DONE]` would reach browser `EventSource` listeners as a
`message` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from starlette.responses import Response

from ziggurat.application.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    Credentials,
    RefreshRequest,
    Registration,
    TokenPair,
)
from ziggurat.application.conversations.models import IDEMPOTENCY_KEY_MAX_LENGTH
from ziggurat.application.conversations.schemas import (
    MAX_PAGE_SIZE,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    MessageCreate,
)
from ziggurat.application.conversations.turn import ChatTurn
from ziggurat.application.users.schemas import UserOut
from ziggurat.connection.http.deps import ApplicationDep, ChatPrincipalDep, PrincipalDep
from ziggurat.connection.http.errors import body_for, error_body
from ziggurat.connection.http.sse import encode_event, sse_response
from ziggurat.errors import ZigguratError
from ziggurat.model.engine import TextDelta
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/api", tags=["app"])

ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
]


@router.post("/auth/register", status_code=201)
async def register(body: Credentials, application: ApplicationDep) -> Registration:
    return await application.auth.register(body.email, body.password)


@router.post("/auth/login")
async def login(body: Credentials, application: ApplicationDep) -> TokenPair:
    return await application.auth.login(body.email, body.password)


@router.post("/auth/refresh")
async def refresh(body: RefreshRequest, application: ApplicationDep) -> TokenPair:
    return await application.auth.refresh(body.refresh_token)


@router.post("/auth/logout", status_code=204)
async def logout(body: RefreshRequest, application: ApplicationDep) -> Response:
    await application.auth.logout(body.refresh_token)
    return Response(status_code=204)


@router.get("/auth/me")
async def me(principal: PrincipalDep, application: ApplicationDep) -> UserOut:
    return await application.users.me(principal)


@router.post("/keys", status_code=201)
async def create_key(
    body: ApiKeyCreate, principal: PrincipalDep, application: ApplicationDep
) -> ApiKeyCreated:
    return await application.api_keys.create(principal, body)


@router.get("/keys")
async def list_keys(principal: PrincipalDep, application: ApplicationDep) -> ApiKeyList:
    return ApiKeyList(data=await application.api_keys.list_keys(principal))


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: ResourceId, principal: PrincipalDep, application: ApplicationDep) -> Response:
    await application.api_keys.revoke(principal, key_id)
    return Response(status_code=204)


@router.post("/conversations", status_code=201)
async def create_conversation(
    body: ConversationCreate, principal: ChatPrincipalDep, application: ApplicationDep
) -> ConversationOut:
    return await application.conversations.create(principal, body)


@router.get("/conversations")
async def list_conversations(
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ConversationPage:
    return await application.conversations.list_conversations(principal, limit=limit, cursor=cursor)


@router.get("/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: ResourceId, principal: ChatPrincipalDep, application: ApplicationDep
) -> ConversationDetail:
    return await application.conversations.get(principal, conversation_id)


@router.post("/conversations/{conversation_id}/messages", response_model=None)
async def post_message(
    conversation_id: ResourceId,
    body: MessageCreate,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    turn = await application.conversations.post_message(principal, conversation_id, body, idempotency_key)
    return sse_response(stream_turn(turn))


async def stream_turn(turn: ChatTurn) -> AsyncIterator[bytes]:
    """The SSE frames of one turn. Leaving early (client gone) cancels the generation."""
    try:
        started = {
            "user_message": turn.user_message.model_dump(mode="json"),
            "assistant_message_id": turn.reply_id,
            "replayed": turn.is_replay,
        }
        yield encode_event(started, event="message")
        async with aclosing(turn.events()) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    yield encode_event({"content": event.text}, event="delta")
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
