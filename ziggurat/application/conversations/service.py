"""Conversations: create, list, read, and chat through the model.

Posting a message follows DESIGN.md's order: the user message (and a
`streaming` placeholder for the reply) is committed before the job is
submitted, so an accepted message survives whatever happens to the
generation. An idempotency key makes a retried post safe: the unique
`(conversation_id, idempotency_key)` constraint decides which of two racing
requests stores the message, and the loser answers from what the winner
stored. No database connection is held while the model streams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import to_generation_request
from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.application.conversations.schemas import (
    MAX_PAGE_SIZE,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    MessageCreate,
    MessageOut,
)
from ziggurat.application.conversations.turn import ChatTurn, ReplyOutcome
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.connection.broker.base import Priority
from ziggurat.errors import Conflict, InvalidRequest, NotFound
from ziggurat.service.generation import GenerationService
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

TITLE_FROM_MESSAGE_CHARS = 80
_NOT_FOUND = "No conversation with this id."


@dataclass(slots=True)
class _StoredTurn:
    user_message: Message
    reply: Message
    is_answered: bool


class ConversationService:
    """Owns the tasks that store finished replies; `aclose()` waits for them."""

    def __init__(self, *, database: Database, generation: GenerationService, history_limit: int = 50) -> None:
        self._database = database
        self._generation = generation
        self._history_limit = history_limit
        self._reply_writes: set[asyncio.Task[MessageOut]] = set()

    async def create(self, principal: Principal, request: ConversationCreate) -> ConversationOut:
        if request.model:
            self._generation.resolve_model(request.model)
        now = utcnow()
        conversation = Conversation(
            id=new_id(),
            user_id=principal.user_id,
            title=(request.title or "").strip() or None,
            model=request.model or None,
            system_prompt=request.system_prompt or None,
            created_at=now,
            updated_at=now,
        )
        async with self._database.session() as session:
            await ConversationRepository(session).add(conversation)
            await session.commit()
        return ConversationOut.model_validate(conversation)

    async def list_conversations(
        self, principal: Principal, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """The principal's conversations, most recently active first."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}.", param="limit")
        before = decode_cursor(cursor) if cursor else None
        async with self._database.session() as session:
            rows = await ConversationRepository(session).list_recent(
                principal.user_id, limit=limit + 1, before=before
            )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].updated_at, page[-1].id) if len(rows) > limit else None
        return ConversationPage(
            data=[ConversationOut.model_validate(row) for row in page], next_cursor=next_cursor
        )

    async def get(self, principal: Principal, conversation_id: str) -> ConversationDetail:
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await _owned(repository, principal, conversation_id)
            messages = await repository.list_messages(principal.user_id, conversation_id)
        return ConversationDetail(
            **ConversationOut.model_validate(conversation).model_dump(),
            messages=[MessageOut.from_row(row) for row in messages],
        )

    async def post_message(
        self,
        principal: Principal,
        conversation_id: str,
        message: MessageCreate,
        idempotency_key: str | None = None,
    ) -> ChatTurn:
        """Store the user message, submit the reply's generation, and return the turn to stream.

        A key seen before returns the stored turn instead: replayed at once if
        answered, generated again if its reply failed or was cut short, and
        `Conflict` while it is still being generated or if the content differs.
        """
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await _owned(repository, principal, conversation_id)
            system_prompt = conversation.system_prompt
            model = self._generation.resolve_model(message.model or conversation.model).name
            stored = await self._store_or_find(
                session, repository, conversation, message, model, idempotency_key
            )
            user_message = MessageOut.from_row(stored.user_message)
            if stored.is_answered:
                return ChatTurn.replay(user_message, MessageOut.from_row(stored.reply))
            reply_id = stored.reply.id
            history = await repository.history(
                principal.user_id, conversation_id, up_to=user_message.created_at, limit=self._history_limit
            )
        request = to_generation_request(
            model=model, system_prompt=system_prompt, history=history, message=message
        )
        try:
            stream = await self._generation.submit(request, priority=Priority.INTERACTIVE)
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            await self.finish_reply(reply_id, ReplyOutcome("", status, status))
            raise
        return ChatTurn(user_message=user_message, reply_id=reply_id, stream=stream, finish=self.finish_reply)

    async def _store_or_find(
        self,
        session: AsyncSession,
        repository: ConversationRepository,
        conversation: Conversation,
        message: MessageCreate,
        model: str,
        key: str | None,
    ) -> _StoredTurn:
        user_id, conversation_id = conversation.user_id, conversation.id
        if key is not None:
            existing = await repository.get_by_idempotency_key(user_id, conversation_id, key)
            if existing is not None:
                return await self._resume(session, repository, user_id, existing, message, model)
        try:
            stored = await _store_turn(repository, conversation, message, model, key)
            await session.commit()
        except IntegrityError:
            # Most likely a racing retry stored this key first; answer from its row.
            await session.rollback()
            existing = None
            if key is not None:
                existing = await repository.get_by_idempotency_key(user_id, conversation_id, key)
            if existing is None:
                raise
            return await self._resume(session, repository, user_id, existing, message, model)
        log.info("message_stored", conversation_id=conversation_id, message_id=stored.user_message.id)
        return stored

    async def _resume(
        self,
        session: AsyncSession,
        repository: ConversationRepository,
        user_id: str,
        user_message: Message,
        message: MessageCreate,
        model: str,
    ) -> _StoredTurn:
        if user_message.content != message.content:
            raise Conflict(
                "This Idempotency-Key was already used for a different message.", param="Idempotency-Key"
            )
        reply = await repository.get_reply(user_id, user_message.conversation_id, user_message.id)
        if reply is None:
            reply = _new_reply(user_message, model)
            await repository.add(reply)
            await session.commit()
            return _StoredTurn(user_message, reply, is_answered=False)
        if reply.status == "complete":
            return _StoredTurn(user_message, reply, is_answered=True)
        if await repository.claim_for_retry(reply.id, model=model):
            await session.commit()
            return _StoredTurn(user_message, reply, is_answered=False)
        raise Conflict("The reply to this message is still being generated; retry once it has finished.")

    async def finish_reply(self, reply_id: str, outcome: ReplyOutcome) -> MessageOut:
        """Store a reply's final state in a task the service owns, safe from the caller's cancellation."""
        task = asyncio.create_task(self._write_reply(reply_id, outcome), name=f"finish-reply-{reply_id}")
        self._reply_writes.add(task)
        task.add_done_callback(self._reply_written)
        return await asyncio.shield(task)

    async def _write_reply(self, reply_id: str, outcome: ReplyOutcome) -> MessageOut:
        async with self._database.session() as session:
            reply = await ConversationRepository(session).get_message(reply_id)
            if reply is None:
                raise NotFound("The reply was deleted while it was being generated.")
            reply.content = outcome.text
            reply.status = outcome.status
            reply.finish_reason = outcome.finish_reason
            if outcome.usage is not None:
                reply.prompt_tokens = outcome.usage.prompt_tokens
                reply.completion_tokens = outcome.usage.completion_tokens
            await session.commit()
        log.info(
            "reply_stored", message_id=reply_id, status=outcome.status, finish_reason=outcome.finish_reason
        )
        return MessageOut.from_row(reply)

    def _reply_written(self, task: asyncio.Task[MessageOut]) -> None:
        self._reply_writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reply_store_failed", error_type=type(task.exception()).__name__)

    async def aclose(self) -> None:
        """Wait for replies still being stored (a shutdown must not lose a finished answer)."""
        if self._reply_writes:
            await asyncio.gather(*self._reply_writes, return_exceptions=True)


async def _owned(
    repository: ConversationRepository, principal: Principal, conversation_id: str
) -> Conversation:
    # Another user's conversation is "not found", never "forbidden": existence must not leak.
    conversation = await repository.get(principal.user_id, conversation_id)
    if conversation is None:
        raise NotFound(_NOT_FOUND, param="conversation_id")
    return conversation


async def _store_turn(
    repository: ConversationRepository,
    conversation: Conversation,
    message: MessageCreate,
    model: str,
    key: str | None,
) -> _StoredTurn:
    last = await repository.last_message(conversation.user_id, conversation.id)
    user_message = Message(
        id=new_id(),
        conversation_id=conversation.id,
        parent_id=last.id if last else None,
        role="user",
        content=message.content,
        status="complete",
        idempotency_key=key,
        created_at=_after(last.created_at if last else None),
    )
    await repository.add(user_message)
    reply = _new_reply(user_message, model)
    await repository.add(reply)
    conversation.updated_at = user_message.created_at
    if conversation.title is None:
        conversation.title = title_from(message.content)
    return _StoredTurn(user_message, reply, is_answered=False)


def _new_reply(user_message: Message, model: str) -> Message:
    return Message(
        id=new_id(),
        conversation_id=user_message.conversation_id,
        parent_id=user_message.id,
        role="assistant",
        content="",
        model=model,
        status="streaming",
        created_at=_after(user_message.created_at),
    )


def _after(previous: datetime | None) -> datetime:
    """Now, but strictly later than `previous`, so message order never depends on clock resolution."""
    now = utcnow()
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


def title_from(content: str) -> str:
    line = " ".join(content.split())
    if len(line) <= TITLE_FROM_MESSAGE_CHARS:
        return line
    return line[: TITLE_FROM_MESSAGE_CHARS - 1].rstrip() + "…"


def encode_cursor(updated_at: datetime, conversation_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_at.isoformat()}|{conversation_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, conversation_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        updated_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest(
            "The cursor is invalid; use next_cursor from a previous page.", param="cursor"
        ) from exc
    if updated_at.tzinfo is None:
        raise InvalidRequest("The cursor is invalid; use next_cursor from a previous page.", param="cursor")
    return updated_at, conversation_id
