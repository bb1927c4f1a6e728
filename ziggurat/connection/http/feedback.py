"""Feedback routes: users rate their answers; admins review and export them for fine-tuning.

`/api/messages/{id}/feedback` (POST creates, PUT creates or replaces, GET,
DELETE) works on assistant answers of the caller's own conversations only.
`/api/feedback` lists the caller's feedback. `/api/admin/feedback` (review)
and `/api/admin/feedback/export` (JSONL, streamed as `application/x-ndjson`)
need the admin permission; both take the same filters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response, StreamingResponse

from ziggurat.application.feedback.models import Thumb
from ziggurat.application.feedback.schemas import (
    ExportFormat,
    FeedbackFilters,
    FeedbackIn,
    FeedbackOut,
    FeedbackPage,
    FeedbackReviewPage,
)
from ziggurat.application.feedback.service import MAX_PAGE_SIZE
from ziggurat.connection.http.deps import AdminPrincipalDep, ApplicationDep, ChatPrincipalDep

router = APIRouter(prefix="/api", tags=["feedback"])

MessageId = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=512)]


async def feedback_filters(
    thumb: Thumb | None = None,
    min_rating: Annotated[int | None, Query(ge=1, le=5)] = None,
    max_rating: Annotated[int | None, Query(ge=1, le=5)] = None,
    has_correction: bool | None = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    user: Annotated[str | None, Query(max_length=320, description="A user id or e-mail address.")] = None,
    role: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="Feedback given at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Feedback given before (ISO 8601).")] = None,
) -> FeedbackFilters:
    return FeedbackFilters(thumb, min_rating, max_rating, has_correction, model, user, role, since, until)


FiltersDep = Annotated[FeedbackFilters, Depends(feedback_filters)]


@router.post("/messages/{message_id}/feedback", status_code=201)
async def create_feedback(
    message_id: MessageId, body: FeedbackIn, principal: ChatPrincipalDep, application: ApplicationDep
) -> FeedbackOut:
    feedback, _ = await application.feedback.record(principal, message_id, body, may_replace=False)
    return feedback


@router.put("/messages/{message_id}/feedback")
async def put_feedback(
    message_id: MessageId,
    body: FeedbackIn,
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    response: Response,
) -> FeedbackOut:
    feedback, is_created = await application.feedback.record(principal, message_id, body, may_replace=True)
    response.status_code = 201 if is_created else 200
    return feedback


@router.get("/messages/{message_id}/feedback")
async def get_feedback(
    message_id: MessageId, principal: ChatPrincipalDep, application: ApplicationDep
) -> FeedbackOut:
    return await application.feedback.get(principal, message_id)


@router.delete("/messages/{message_id}/feedback", status_code=204)
async def delete_feedback(
    message_id: MessageId, principal: ChatPrincipalDep, application: ApplicationDep
) -> Response:
    await application.feedback.delete(principal, message_id)
    return Response(status_code=204)


@router.get("/feedback")
async def list_own_feedback(
    principal: ChatPrincipalDep, application: ApplicationDep, limit: Limit = 20, cursor: Cursor = None
) -> FeedbackPage:
    return await application.feedback.list_own(principal, limit=limit, cursor=cursor)


@router.get("/admin/feedback")
async def review_feedback(
    principal: AdminPrincipalDep,
    application: ApplicationDep,
    filters: FiltersDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> FeedbackReviewPage:
    return await application.feedback.review(principal, filters, limit=limit, cursor=cursor)


@router.get("/admin/feedback/export", response_class=StreamingResponse)
async def export_feedback(
    principal: AdminPrincipalDep,
    application: ApplicationDep,
    filters: FiltersDep,
    format: ExportFormat = "sft",
) -> StreamingResponse:
    """Rated answers as fine-tuning data, one JSON object per line (`sft` or `preference`)."""
    lines = application.feedback.export(principal, format, filters)
    disposition = f'attachment; filename="feedback-{format}.jsonl"'
    return StreamingResponse(
        lines, media_type="application/x-ndjson", headers={"Content-Disposition": disposition}
    )
