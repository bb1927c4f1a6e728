"""Chatting in a conversation: post a message, edit one, regenerate a reply, stop a reply.

Every turn follows DESIGN.md's order: the user message (and a `streaming`
placeholder for the reply) is committed before the job is submitted, so an
accepted message survives whatever happens to the generation. No database
connection is held while the model streams or while prompts are tokenised.
The caller's rate limits and quotas are checked before anything is stored, so
a refused turn (`RateLimited`) leaves no rows behind.

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
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import (
    ContextWindow,
    FittedPrompt,
    resolve_parameters,
    to_generation_request,
)
from ziggurat.application.conversations.history import ConversationHistory
from ziggurat.application.conversations.keeper import ReplyKeeper
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.policies import ChatPolicy, KeeperPolicy
from ziggurat.application.conversations.reply_store import ReplyStore
from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.application.conversations.schemas import GenerationOverrides, MessageCreate, MessageOut
from ziggurat.application.conversations.service import owned_conversation
from ziggurat.application.conversations.titles import TitleWriter
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.conversations.turn import ChatTurn, ReplyOutcome
from ziggurat.application.conversations.turn_plan import (
    MESSAGE_NOT_FOUND,
    STILL_STREAMING,
    PlanInputs,
    TurnAction,
    TurnPlan,
    plan_turn,
)
from ziggurat.application.conversations.turn_rows import later_than, new_reply, title_from
from ziggurat.application.presets.repository import PresetRepository
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.connection.broker.base import Priority
from ziggurat.errors import Conflict, InvalidRequest, NotFound
from ziggurat.model.engine import GenerationRequest
from ziggurat.service.generation import GenerationService
from ziggurat.service.limits.policy import LimitSubject
from ziggurat.service.limits.ticket import LimitTicket
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

STOP_WAIT_S = 10.0
STORED_WAIT_S = 30.0
"""How long a reader waits, after the stream ended, for the reply to be stored (by any gateway)."""


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
        keeping: KeeperPolicy,
        history: ConversationHistory | None = None,
    ) -> None:
        self._database = database
        self._history = history or ConversationHistory(None)
        self._generation = generation
        self._context = context
        self.titles = titles
        self._policy = policy
        self._is_shared = keeping.is_shared
        self._recovery_grace = timedelta(seconds=keeping.recovery_grace_s)
        self._replies = ReplyStore(
            database=database,
            history=self._history,
            titles=titles,
            record_usage=policy.record_usage,
            default_model=lambda: generation.resolve_model(None).name,
        )
        self.keeper = ReplyKeeper(
            leases=keeping.leases,
            holder=keeping.holder,
            store=self._replies.store,
            lease_ttl_s=keeping.lease_ttl_s,
            is_shared=keeping.is_shared,
        )

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
        """Stop a reply being generated (from any connection, on any gateway); the partial text is kept.

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
        if reply.status != "streaming":
            return MessageOut.from_row(reply)
        if reply.job_id is not None:
            await self._generation.cancel(reply.job_id)
        stored = await self.wait_stored(message_id, timeout_s=STOP_WAIT_S)
        if stored.status == "streaming":
            # Nobody stored it in time: no gateway keeps it any more (for example, all restarted).
            async with self._database.session() as session:
                repository = ConversationRepository(session)
                if await repository.cancel_if_streaming(message_id):
                    await session.commit()
                row = await repository.get_message_by_id(message_id)
            await self._history.forget(conversation_id)
            stored = MessageOut.from_row(row) if row is not None else stored
        return stored

    async def resume(self, principal: Principal, message_id: str, *, after: str | None) -> ChatTurn:
        """Continue reading a reply's stream after entry `after` (from another connection or gateway).

        A reply that has finished meanwhile is given whole, as one final event.
        """
        async with self._database.session() as session:
            reply = await ConversationRepository(session).get_owned_message(principal.user_id, message_id)
        if reply is None or reply.role != "assistant":
            raise NotFound(MESSAGE_NOT_FOUND, param="message_id")
        if reply.status != "streaming" or reply.job_id is None:
            return ChatTurn.replay(None, MessageOut.from_row(reply), with_text=False)
        stream = self._generation.attach(reply.job_id, reply.model or "", after=after)
        return ChatTurn(
            user_message=None,
            reply_id=message_id,
            stream=stream,
            wait_stored=lambda: self.wait_stored(message_id, timeout_s=STORED_WAIT_S),
        )

    async def wait_stored(self, reply_id: str, *, timeout_s: float) -> MessageOut:
        """The reply once stored by whichever gateway keeps it (as it is, if that takes over `timeout_s`)."""
        stored = await self.keeper.wait_stored(reply_id, timeout_s)
        if stored is not None:
            return stored
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with self._database.session() as session:
                row = await ConversationRepository(session).get_message_by_id(reply_id)
            if row is None:
                raise NotFound("The reply was deleted while it was being generated.")
            if row.status != "streaming" or asyncio.get_running_loop().time() >= deadline:
                return MessageOut.from_row(row)
            await asyncio.sleep(0.1)

    async def recover_orphans(self, *, limit: int = 100) -> int:
        """Adopt `streaming` replies that no gateway keeps any more; returns how many were taken.

        With a shared stream store the job may still be running (or finished)
        on a worker: the reply is read from its stream and stored. In one
        process, a reply not kept here died with an earlier run of the server.
        """
        async with self._database.session() as session:
            rows = await ConversationRepository(session).streaming_replies(
                started_before=utcnow() - self._recovery_grace, limit=limit
            )
        taken = 0
        for row in rows:
            if row.id in self.keeper or row.job_id is None:
                continue
            if not self._is_shared:
                await self._replies.store(row.id, row.job_id, ReplyOutcome(row.content, "error", "error"))
                taken += 1
                continue
            stream = self._generation.attach(row.job_id, row.model or "")
            if await self.keeper.adopt(row.id, stream):
                taken += 1
        return taken

    async def _start(
        self, principal: Principal, conversation_id: str, action: TurnAction, key: str | None
    ) -> ChatTurn:
        # A draining server refuses before anything is stored, so the retry on another server starts clean.
        self._generation.check_accepting()
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
            job_id = new_id()
            request = to_generation_request(
                model=plan.model.name, messages=fitted.messages, parameters=plan.parameters, request_id=job_id
            )
            # Rate limits and quotas are checked before the turn is stored: a refusal leaves no rows.
            admission = await self._generation.admit(
                request, self._limits_of(principal), prompt_tokens=fitted.report.prompt_tokens
            )
            try:
                user_message = await self._write(principal, conversation_id, action, plan, key, job_id)
            except BaseException as exc:
                if admission is not None:
                    await admission.abandon()
                if not isinstance(exc, IntegrityError) or key is None or attempt > 0:
                    raise
                # Most likely a racing retry stored this key first: plan again from its rows.
                continue
            return await self._submit(principal, plan, fitted, user_message, request, admission)
        raise AssertionError("unreachable")

    def _limits_of(self, principal: Principal) -> LimitSubject | None:
        return self._policy.limits_for(principal) if self._policy.limits_for is not None else None

    async def _plan_inputs(
        self, principal: Principal, conversation_id: str, action: TurnAction
    ) -> PlanInputs:
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            preset = None
            if conversation.preset_id is not None:
                preset = await PresetRepository(session).get(principal.user_id, conversation.preset_id)
            messages = await self._history.load(
                repository, principal.user_id, conversation_id, conversation.current_leaf_id
            )
        parameters = resolve_parameters(conversation, preset, action.overrides)
        return PlanInputs(
            tree=MessageTree(messages),
            current_leaf_id=conversation.current_leaf_id,
            parameters=parameters,
            model=await self._policy.resolve_model(principal, parameters.model),
            history_limit=self._policy.history_limit,
        )

    async def _write(
        self,
        principal: Principal,
        conversation_id: str,
        action: TurnAction,
        plan: TurnPlan,
        key: str | None,
        job_id: str,
    ) -> MessageOut:
        """Store the turn's rows (commit) and return the user message it answers."""
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            user_message = plan.user_message
            added: list[Message] = []
            if not plan.is_new_reply:
                assert user_message is not None
                if not await repository.claim_for_retry(plan.reply_id, model=plan.model.name, job_id=job_id):
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
                        created_at=later_than(plan.newest_at),
                    )
                    await repository.add(user_message)
                    added.append(user_message)
                    if conversation.title is None:
                        conversation.title, conversation.title_source = title_from(action.content), "message"
                # A regeneration's key marks its reply; a message's key marks the user message.
                reply_key = key if action.kind == "regenerate" else None
                reply = new_reply(
                    plan.reply_id, user_message, plan.model.name, reply_key, job_id, after=plan.newest_at
                )
                await repository.add(reply)
                added.append(reply)
                conversation.current_leaf_id = reply.id
                conversation.updated_at = reply.created_at
            await session.commit()
        if plan.is_new_reply:
            await self._history.added(conversation_id, added)
        else:
            await self._history.forget(conversation_id)
        log.info("turn_stored", conversation_id=conversation_id, action=action.kind, reply_id=plan.reply_id)
        return MessageOut.from_row(user_message)

    async def _submit(
        self,
        principal: Principal,
        plan: TurnPlan,
        fitted: FittedPrompt,
        user_message: MessageOut,
        request: GenerationRequest,
        admission: LimitTicket | None,
    ) -> ChatTurn:
        job_id = request.request_id
        try:
            stream = await self._generation.submit(
                request,
                priority=Priority.INTERACTIVE,
                cancel_on_close=False,
                cache_scope=self._generation.cache_scope(principal.user_id),
                admission=admission,
            )
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            await self._replies.store(plan.reply_id, job_id, ReplyOutcome("", status, status))
            raise
        self._replies.expect_usage(plan.reply_id, principal, plan.model.name)
        await self.keeper.keep(plan.reply_id, stream)
        return ChatTurn(
            user_message=user_message,
            reply_id=plan.reply_id,
            stream=stream.another_reader(),
            wait_stored=lambda: self.wait_stored(plan.reply_id, timeout_s=STORED_WAIT_S),
            context=fitted.report,
        )

    async def aclose(self) -> None:
        """Hand kept replies over (or store them), wait for replies being stored, stop titles."""
        await self.keeper.aclose()
        await self._replies.aclose()
        await self.titles.aclose()
