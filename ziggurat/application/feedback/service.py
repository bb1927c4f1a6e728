"""Feedback: users rate their own answers; admins review it and export it for fine-tuning.

A user may rate only assistant answers in their own (not deleted)
conversations; anything else is "not found" (another user's message) or a
clear 400 (a user message). `POST` creates the one feedback of an answer,
`PUT` creates or replaces it.

Review and export need the admin permission, checked here (the service is
the authority; routes check it too, for a fast 403). The export streams: it
reads the matching feedback in batches of `export_batch_size`, oldest first,
loads each batch's conversations in two queries, and yields JSONL lines,
holding no database connection between batches, so exporting a large
history costs bounded memory and blocks nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import orjson
from sqlalchemy.exc import IntegrityError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.feedback.export import preference_records, sft_record
from ziggurat.application.feedback.models import Feedback
from ziggurat.application.feedback.repository import FeedbackRepository
from ziggurat.application.feedback.schemas import (
    ExportFormat,
    FeedbackFilters,
    FeedbackIn,
    FeedbackOut,
    FeedbackPage,
    FeedbackReview,
    FeedbackReviewPage,
)
from ziggurat.application.store.cursor import decode_cursor, encode_cursor
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

MAX_PAGE_SIZE = 100
_NO_MESSAGE = "No message with this id."
_NO_FEEDBACK = "This answer has no feedback yet."


class FeedbackService:
    def __init__(self, *, database: Database, export_batch_size: int = 200) -> None:
        self._database = database
        self._export_batch_size = export_batch_size

    async def record(
        self, principal: Principal, message_id: str, request: FeedbackIn, *, may_replace: bool
    ) -> tuple[FeedbackOut, bool]:
        """Store feedback on an answer; also whether it was created (else replaced)."""
        async with self._database.session() as session:
            repository = FeedbackRepository(session)
            answer = await repository.owned_message(principal.user_id, message_id)
            if answer is None:
                raise NotFound(_NO_MESSAGE, param="message_id")
            if answer.role != "assistant":
                raise InvalidRequest("Feedback is for the assistant's answers only.", param="message_id")
            if answer.status == "streaming":
                raise Conflict("This answer is still being generated; rate it once it has finished.")
            feedback = await repository.get_for_message(principal.user_id, message_id)
            is_created = feedback is None
            if feedback is not None and not may_replace:
                raise Conflict("This answer already has your feedback; use PUT to change it.")
            now = utcnow()
            if feedback is None:
                feedback = Feedback(
                    id=new_id(), message_id=message_id, user_id=principal.user_id, created_at=now
                )
                await repository.add(feedback)
            feedback.thumb = request.thumb
            feedback.rating = request.rating
            feedback.comment = request.comment or None
            feedback.corrected_answer = request.corrected_answer or None
            feedback.updated_at = now
            try:
                await session.commit()
            except IntegrityError as exc:  # a racing request created it first
                raise Conflict("This answer already has your feedback; use PUT to change it.") from exc
        log.info("feedback_recorded", message_id=message_id, is_created=is_created)
        return FeedbackOut.from_row(feedback, answer.conversation_id), is_created

    async def get(self, principal: Principal, message_id: str) -> FeedbackOut:
        async with self._database.session() as session:
            repository = FeedbackRepository(session)
            answer = await repository.owned_message(principal.user_id, message_id)
            feedback = await repository.get_for_message(principal.user_id, message_id) if answer else None
        if answer is None:
            raise NotFound(_NO_MESSAGE, param="message_id")
        if feedback is None:
            raise NotFound(_NO_FEEDBACK, param="message_id")
        return FeedbackOut.from_row(feedback, answer.conversation_id)

    async def delete(self, principal: Principal, message_id: str) -> None:
        async with self._database.session() as session:
            repository = FeedbackRepository(session)
            answer = await repository.owned_message(principal.user_id, message_id)
            feedback = await repository.get_for_message(principal.user_id, message_id) if answer else None
            if feedback is None:
                raise NotFound(_NO_FEEDBACK if answer else _NO_MESSAGE, param="message_id")
            await repository.delete(feedback)
            await session.commit()

    async def list_own(
        self, principal: Principal, *, limit: int = 20, cursor: str | None = None
    ) -> FeedbackPage:
        _check_limit(limit)
        async with self._database.session() as session:
            rows = await FeedbackRepository(session).list_own(
                principal.user_id, limit=limit + 1, before=decode_cursor(cursor) if cursor else None
            )
        page = rows[:limit]
        return FeedbackPage(
            data=[FeedbackOut.from_row(feedback, conversation_id) for feedback, conversation_id in page],
            next_cursor=_next_cursor([feedback for feedback, _ in page], has_more=len(rows) > limit),
        )

    async def review(
        self, principal: Principal, filters: FeedbackFilters, *, limit: int = 20, cursor: str | None = None
    ) -> FeedbackReviewPage:
        _require_admin(principal)
        _check_limit(limit)
        async with self._database.session() as session:
            rows = await FeedbackRepository(session).review(
                filters, limit=limit + 1, before=decode_cursor(cursor) if cursor else None
            )
        page = rows[:limit]
        data = [
            FeedbackReview(
                **FeedbackOut.from_row(row.feedback, row.answer.conversation_id).model_dump(),
                user_id=row.feedback.user_id,
                user_email=row.user_email,
                user_role=row.user_role,
                model=row.answer.model,
                question=row.question,
                answer=row.answer.content,
            )
            for row in page
        ]
        return FeedbackReviewPage(
            data=data, next_cursor=_next_cursor([row.feedback for row in page], has_more=len(rows) > limit)
        )

    def export(
        self, principal: Principal, format: ExportFormat, filters: FeedbackFilters
    ) -> AsyncIterator[bytes]:
        """JSONL lines (each ending in a newline); the permission is checked before anything streams."""
        _require_admin(principal)
        log.info("feedback_export_started", format=format)
        return self._export_lines(format, filters)

    async def _export_lines(self, format: ExportFormat, filters: FeedbackFilters) -> AsyncIterator[bytes]:
        after: tuple[datetime, str] | None = None
        while True:
            async with self._database.session() as session:
                repository = FeedbackRepository(session)
                rows = await repository.export_batch(filters, limit=self._export_batch_size, after=after)
                if not rows:
                    return
                contexts = await repository.conversations(answer.conversation_id for _, answer in rows)
                rated = await repository.for_messages(
                    message.id for context in contexts.values() for message in context.messages
                )
            trees = {
                conversation_id: MessageTree(context.messages)
                for conversation_id, context in contexts.items()
            }
            for feedback, answer in rows:
                context, tree = contexts[answer.conversation_id], trees[answer.conversation_id]
                if format == "sft":
                    record = sft_record(tree, answer, feedback, context.system_prompt)
                    if record is not None:
                        yield orjson.dumps(record) + b"\n"
                else:
                    for pair in preference_records(tree, answer, feedback, context.system_prompt, rated):
                        yield orjson.dumps(pair) + b"\n"
            after = (rows[-1][0].created_at, rows[-1][0].id)


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Reviewing and exporting feedback needs the admin permission.")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}.", param="limit")


def _next_cursor(page: list[Feedback], *, has_more: bool) -> str | None:
    return encode_cursor(page[-1].created_at, page[-1].id) if has_more and page else None
