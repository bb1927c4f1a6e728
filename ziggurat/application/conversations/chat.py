"""Chatting in a conversation: post a message, edit one, regenerate a reply, stop a reply.

Every turn follows DESIGN.md's order: the user message (and a `streaming`
placeholder for the reply) is committed before the job is submitted, so an
accepted message survives whatever happens to the generation. No database
connection is held while the model streams or while prompts are tokenised.

Branches: a post continues the shown path; an edit adds a sibling of the
edited user message (same parent) with a new reply; a regeneration adds a
sibling reply under the same user message. Each moves the conversation's
current leaf to the new reply, and the model sees the shown path only.

An idempotency key makes a retried request safe for all three: the unique
`(conversation_id, idempotency_key)` constraint decides which of two racing
requests stores its message, and the loser plans again (`turn_plan.py`) and
answers from what the winner stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import (
    ContextWindow,
    FittedPrompt,
    ModelResolver,
    resolve_parameters,
    to_generation_request,
)
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.application.conversations.running import RunningReplies
from ziggurat.application.conversations.schemas import GenerationOverrides, MessageCreate, MessageOut
from ziggurat.application.conversations.service import owned_conversation
from ziggurat.application.conversations.titles import TitleJob, TitleWriter
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.conversations.turn import ChatTurn, FinishReply, ReplyOutcome
from ziggurat.application.conversations.turn_plan import (
    MESSAGE_NOT_FOUND,
    STILL_STREAMING,
    PlanInputs,
    TurnAction,
    TurnPlan,
    plan_turn,
)
from ziggurat.application.presets.repository import PresetRepository
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.connection.broker.base import Priority
from ziggurat.errors import Conflict, InvalidRequest, NotFound
from ziggurat.model.engine import Usage
from ziggurat.service.generation import GenerationService
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

TITLE_FROM_MESSAGE_CHARS = 80
STOP_WAIT_S = 10.0

UsageSink = Callable[[Principal, str, Usage], None]


@dataclass(slots=True, frozen=True)
class ChatPolicy:
    """Who may use which model, where token usage goes, and how much history is considered."""

    resolve_model: ModelResolver
    record_usage: UsageSink | None = None
    history_limit: int = 200


class ChatService:
    """Owns the tasks that store finished replies and the title writer; `aclose()` settles both."""

    def __init__(
        self,
        *,
        database: Database,
        generation: GenerationService,
        context: ContextWindow,
        titles: TitleWriter,
        policy: ChatPolicy,
    ) -> None:
        self._database = database
        self._generation = generation
        self._context = context
        self.titles = titles
        self._policy = policy
        self._running = RunningReplies()
        self._reply_writes: set[asyncio.Task[MessageOut]] = set()

    async def post_message(
        self,
        principal: Principal,
        conversation_id: str,
        message: MessageCreate,
        idempotency_key: str | None = None,
    ) -> ChatTurn:
        """Continue the shown path with a user message; returns the turn to stream."""
        action = TurnAction("post", message, content=message.content)
        return await self._start(principal, conversation_id, action, idempotency_key)

    async def edit_message(
        self,
        principal: Principal,
        conversation_id: str,
        message_id: str,
        message: MessageCreate,
        idempotency_key: str | None = None,
    ) -> ChatTurn:
        """A new version of a user message, beside the old one, and its answer."""
        action = TurnAction("edit", message, content=message.content, target_id=message_id)
        return await self._start(principal, conversation_id, action, idempotency_key)

    async def regenerate(
        self,
        principal: Principal,
        conversation_id: str,
        message_id: str,
        overrides: GenerationOverrides,
        idempotency_key: str | None = None,
    ) -> ChatTurn:
        """Another answer to the user message that `message_id` (a reply) answers."""
        action = TurnAction("regenerate", overrides, target_id=message_id)
        return await self._start(principal, conversation_id, action, idempotency_key)

    async def stop(self, principal: Principal, conversation_id: str, message_id: str) -> MessageOut:
        """Stop a reply being generated (from any connection); the partial text is kept as `cancelled`.

        Stopping a reply that has already finished changes nothing and returns it.
        """
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            await owned_conversation(repository, principal, conversation_id)
            reply = await repository.get_message(principal.user_id, conversation_id, message_id)
            if reply is None:
                raise NotFound(MESSAGE_NOT_FOUND, param="message_id")
            if reply.role != "assistant":
                raise InvalidRequest("Only a reply can be stopped.", param="message_id")
        stored = await self._running.stop(message_id, timeout_s=STOP_WAIT_S)
        if stored is not None:
            return stored
        if reply.status == "streaming" and message_id not in self._running:
            # No process generates it any more (for example, the server restarted mid-answer).
            async with self._database.session() as session:
                repository = ConversationRepository(session)
                if await repository.cancel_if_streaming(message_id):
                    await session.commit()
                reply = await repository.get_message(principal.user_id, conversation_id, message_id) or reply
        return MessageOut.from_row(reply)

    async def _start(
        self, principal: Principal, conversation_id: str, action: TurnAction, key: str | None
    ) -> ChatTurn:
        for attempt in range(2):
            plan = plan_turn(await self._plan_inputs(principal, conversation_id, action), action, key)
            if plan.replay is not None:
                return plan.replay
            fitted = await self._context.fit(
                plan.model,
                system_prompt=plan.parameters.system_prompt,
                history=plan.history,
                max_tokens=plan.parameters.max_tokens,
            )
            self._running.begin(plan.reply_id)
            try:
                user_message = await self._write(principal, conversation_id, action, plan, key)
            except IntegrityError:
                self._running.end(plan.reply_id, None)
                if key is None or attempt > 0:
                    raise
                # Most likely a racing retry stored this key first: plan again from its rows.
                continue
            except BaseException:
                self._running.end(plan.reply_id, None)
                raise
            return await self._submit(principal, plan, fitted, user_message)
        raise AssertionError("unreachable")

    async def _plan_inputs(
        self, principal: Principal, conversation_id: str, action: TurnAction
    ) -> PlanInputs:
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            preset = None
            if conversation.preset_id is not None:
                preset = await PresetRepository(session).get(principal.user_id, conversation.preset_id)
            messages = await repository.list_messages(principal.user_id, conversation_id)
        parameters = resolve_parameters(conversation, preset, action.overrides)
        return PlanInputs(
            tree=MessageTree(messages),
            current_leaf_id=conversation.current_leaf_id,
            parameters=parameters,
            model=await self._policy.resolve_model(principal, parameters.model),
            history_limit=self._policy.history_limit,
        )

    async def _write(
        self, principal: Principal, conversation_id: str, action: TurnAction, plan: TurnPlan, key: str | None
    ) -> MessageOut:
        """Store the turn's rows (commit) and return the user message it answers."""
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            user_message = plan.user_message
            if not plan.is_new_reply:
                assert user_message is not None
                if not await repository.claim_for_retry(plan.reply_id, model=plan.model.name):
                    raise Conflict(STILL_STREAMING)
            else:
                if user_message is None:
                    user_message = Message(
                        id=new_id(),
                        conversation_id=conversation_id,
                        parent_id=plan.parent_id,
                        role="user",
                        content=action.content,
                        status="complete",
                        idempotency_key=key,
                        created_at=_after(plan.newest_at),
                    )
                    await repository.add(user_message)
                    if conversation.title is None:
                        conversation.title, conversation.title_source = title_from(action.content), "message"
                # A regeneration's key marks its reply; a message's key marks the user message.
                reply_key = key if action.kind == "regenerate" else None
                reply = _new_reply(
                    plan.reply_id, user_message, plan.model.name, reply_key, after=plan.newest_at
                )
                await repository.add(reply)
                conversation.current_leaf_id = reply.id
                conversation.updated_at = reply.created_at
            await session.commit()
        log.info("turn_stored", conversation_id=conversation_id, action=action.kind, reply_id=plan.reply_id)
        return MessageOut.from_row(user_message)

    async def _submit(
        self, principal: Principal, plan: TurnPlan, fitted: FittedPrompt, user_message: MessageOut
    ) -> ChatTurn:
        request = to_generation_request(
            model=plan.model.name, messages=fitted.messages, parameters=plan.parameters
        )
        try:
            stream = await self._generation.submit(request, priority=Priority.INTERACTIVE)
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            await self.finish_reply(plan.reply_id, ReplyOutcome("", status, status))
            raise
        await self._running.attach(plan.reply_id, stream)
        return ChatTurn(
            user_message=user_message,
            reply_id=plan.reply_id,
            stream=stream,
            finish=self._finisher(principal, plan.model.name),
            context=fitted.report,
        )

    def _finisher(self, principal: Principal, model: str) -> FinishReply:
        async def finish(reply_id: str, outcome: ReplyOutcome) -> MessageOut:
            if outcome.usage is not None and self._policy.record_usage is not None:
                self._policy.record_usage(principal, model, outcome.usage)
            return await self.finish_reply(reply_id, outcome)

        return finish

    async def finish_reply(self, reply_id: str, outcome: ReplyOutcome) -> MessageOut:
        """Store a reply's final state in a task the service owns, safe from the caller's cancellation."""
        task = asyncio.create_task(self._write_reply(reply_id, outcome), name=f"finish-reply-{reply_id}")
        self._reply_writes.add(task)
        task.add_done_callback(self._reply_written)
        return await asyncio.shield(task)

    async def _write_reply(self, reply_id: str, outcome: ReplyOutcome) -> MessageOut:
        stored: MessageOut | None = None
        title_job: TitleJob | None = None
        try:
            async with self._database.session() as session:
                repository = ConversationRepository(session)
                reply = await repository.get_message_by_id(reply_id)
                if reply is None:
                    raise NotFound("The reply was deleted while it was being generated.")
                reply.content = outcome.text
                reply.status = outcome.status
                reply.finish_reason = outcome.finish_reason
                if outcome.usage is not None:
                    reply.prompt_tokens = outcome.usage.prompt_tokens
                    reply.completion_tokens = outcome.usage.completion_tokens
                title_job = await self._title_job(repository, reply) if outcome.status == "complete" else None
                await session.commit()
            stored = MessageOut.from_row(reply)
        finally:
            self._running.end(reply_id, stored)
        log.info(
            "reply_stored", message_id=reply_id, status=outcome.status, finish_reason=outcome.finish_reason
        )
        if title_job is not None:
            self.titles.schedule(title_job)
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
            model=reply.model or self._generation.resolve_model(None).name,
            question=question.content,
            answer=reply.content,
        )

    def _reply_written(self, task: asyncio.Task[MessageOut]) -> None:
        self._reply_writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reply_store_failed", error_type=type(task.exception()).__name__)

    async def aclose(self) -> None:
        """Wait for replies still being stored (a shutdown must not lose a finished answer), stop titles."""
        if self._reply_writes:
            await asyncio.gather(*self._reply_writes, return_exceptions=True)
        await self.titles.aclose()


def _new_reply(
    reply_id: str, user_message: Message, model: str, key: str | None, *, after: datetime | None
) -> Message:
    previous = user_message.created_at if after is None else max(after, user_message.created_at)
    return Message(
        id=reply_id,
        conversation_id=user_message.conversation_id,
        parent_id=user_message.id,
        role="assistant",
        content="",
        model=model,
        status="streaming",
        idempotency_key=key,
        created_at=_after(previous),
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
