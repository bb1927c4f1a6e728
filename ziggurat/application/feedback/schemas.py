"""Pydantic API types for feedback, its admin review, and the export filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ziggurat.application.conversations.schemas import MAX_MESSAGE_CHARS
from ziggurat.application.feedback.models import Feedback, Thumb

MAX_COMMENT_CHARS = 4000
ExportFormat = Literal["sft", "preference"]


class FeedbackIn(BaseModel):
    """At least one of the fields; a `corrected_answer` is what the answer should have been."""

    model_config = ConfigDict(extra="forbid")

    thumb: Thumb | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    corrected_answer: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackIn:
        texts = (self.comment, self.corrected_answer)
        if self.thumb is None and self.rating is None and not any(text and text.strip() for text in texts):
            raise ValueError("give a thumb, a rating, a comment or a corrected answer")
        return self


class FeedbackOut(BaseModel):
    id: str
    message_id: str
    conversation_id: str
    thumb: str | None
    rating: int | None
    comment: str | None
    corrected_answer: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Feedback, conversation_id: str) -> FeedbackOut:
        return cls(
            id=row.id,
            message_id=row.message_id,
            conversation_id=conversation_id,
            thumb=row.thumb,
            rating=row.rating,
            comment=row.comment,
            corrected_answer=row.corrected_answer,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class FeedbackPage(BaseModel):
    data: list[FeedbackOut]
    next_cursor: str | None


class FeedbackReview(FeedbackOut):
    """Feedback as an admin reviews it: who gave it, on which model, about which exchange."""

    user_id: str
    user_email: str
    user_role: str
    model: str | None
    question: str | None
    answer: str


class FeedbackReviewPage(BaseModel):
    data: list[FeedbackReview]
    next_cursor: str | None


@dataclass(slots=True, frozen=True)
class FeedbackFilters:
    """Which feedback an admin reviews or exports; unset fields do not filter."""

    thumb: Thumb | None = None
    min_rating: int | None = None
    max_rating: int | None = None
    has_correction: bool | None = None
    model: str | None = None
    user: str | None = None  # an id or an e-mail address
    role: str | None = None
    since: datetime | None = None
    until: datetime | None = None
