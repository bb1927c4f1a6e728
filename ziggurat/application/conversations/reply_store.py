"""Storing a reply's final state: its text, status and usage, and the conversation's title job.

The keeper (`keeper.py`) decides *when* a reply is final; this writes it. Each write
runs in a task this store owns, so a caller that is cancelled meanwhile (a client
leaving, a gateway shutting down) cannot interrupt a half-done write, and `aclose()`
waits for the writes still running. The usage of a turn is recorded once, by whoever
stores its reply, against the principal that started the turn (`expect_usage`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.history import ConversationHistory
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.application.conversations.schemas import MessageOut
from ziggurat.application.conversations.titles import TitleJob, TitleWriter
from ziggurat.application.conversations.turn import ReplyOutcome
from ziggurat.application.store.database import Database
from ziggurat.model.engine import Usage
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

UsageSink = Callable[[Principal, str, Usage], None]


class ReplyStore:
    """`store` is the keeper's callback; `default_model` names the model of a reply that names none."""

    def __init__(
        self,
        *,
        database: Database,
        history: ConversationHistory,
        titles: TitleWriter,
        record_usage: UsageSink | None,
        default_model: Callable[[], str],
    ) -> None:
        self._database = database
        self._history = history
        self._titles = titles
        self._record_usage = record_usage
        self._default_model = default_model
        self._usage_owners: dict[str, tuple[Principal, str]] = {}
        self._writes: set[asyncio.Task[MessageOut | None]] = set()

    def expect_usage(self, reply_id: str, principal: Principal, model: str) -> None:
        """Charge the usage of `reply_id`, once stored, to `principal` (and `model`, unless it names one)."""
        self._usage_owners[reply_id] = (principal, model)

    async def store(self, reply_id: str, job_id: str, outcome: ReplyOutcome) -> MessageOut | None:
        """Store a reply's final state in a task of its own, safe from the caller's cancellation."""
        owner = self._usage_owners.pop(reply_id, None)
        if owner is not None and outcome.usage is not None and self._record_usage is not None:
            self._record_usage(owner[0], outcome.model or owner[1], outcome.usage)
        task = asyncio.create_task(self._write(reply_id, job_id, outcome), name=f"store-reply-{reply_id}")
        self._writes.add(task)
        task.add_done_callback(self._written)
        return await asyncio.shield(task)

    async def _write(self, reply_id: str, job_id: str, outcome: ReplyOutcome) -> MessageOut | None:
        title_job: TitleJob | None = None
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            usage = outcome.usage
            is_ours = await repository.finish_streaming(
                reply_id,
                job_id,
                content=outcome.text,
                status=outcome.status,
                finish_reason=outcome.finish_reason,
                prompt_tokens=usage.prompt_tokens if usage is not None else None,
                completion_tokens=usage.completion_tokens if usage is not None else None,
                model=outcome.model,
            )
            reply = await repository.get_message_by_id(reply_id)
            if reply is None:
                return None
            if is_ours and outcome.status == "complete":
                title_job = await self._title_job(repository, reply)
            await session.commit()
            if is_ours:
                await self._history.changed(reply)
            stored = MessageOut.from_row(reply)
        if is_ours:
            log.info(
                "reply_stored",
                message_id=reply_id,
                status=outcome.status,
                finish_reason=outcome.finish_reason,
            )
        if title_job is not None:
            self._titles.schedule(title_job)
        return stored

    async def _title_job(self, repository: ConversationRepository, reply: Message) -> TitleJob | None:
        """A title job when `reply` completes the conversation's first exchange and no title was chosen."""
        question = await repository.get_message_by_id(reply.parent_id) if reply.parent_id else None
        if question is None or question.parent_id is not None:
            return None
        conversation = await repository.get_conversation_by_id(reply.conversation_id)
        if conversation is None or conversation.title_source not in (None, "message"):
            return None
        return TitleJob(
            user_id=conversation.user_id,
            conversation_id=conversation.id,
            model=reply.model or self._default_model(),
            question=question.content,
            answer=reply.content,
        )

    def _written(self, task: asyncio.Task[MessageOut | None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reply_store_failed", error_type=type(task.exception()).__name__)

    async def aclose(self) -> None:
        """Wait for the writes still running."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
