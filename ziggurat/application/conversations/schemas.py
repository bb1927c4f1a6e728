"""Pydantic API types for conversations and messages."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ziggurat.application.conversations.models import MODEL_NAME_MAX_LENGTH, TITLE_MAX_LENGTH, Message

# About 8k tokens of text: a long question, not a document upload (that is a later feature).
MAX_MESSAGE_CHARS = 32_000
MAX_SYSTEM_PROMPT_CHARS = 16_000
MAX_PAGE_SIZE = 100


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationCreate(_Request):
    title: str | None = Field(default=None, max_length=TITLE_MAX_LENGTH)
    model: str | None = Field(default=None, max_length=MODEL_NAME_MAX_LENGTH)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)


class MessageCreate(_Request):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    model: str | None = Field(default=None, max_length=MODEL_NAME_MAX_LENGTH)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("the message is empty")
        return content


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime


class MessageUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    parent_id: str | None
    role: str
    content: str
    model: str | None
    status: str
    finish_reason: str | None
    usage: MessageUsage | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Message) -> MessageOut:
        """The API view of a stored message; token counts become `usage` once both are known."""
        usage = None
        if row.prompt_tokens is not None and row.completion_tokens is not None:
            usage = MessageUsage(
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                total_tokens=row.prompt_tokens + row.completion_tokens,
            )
        return cls(
            id=row.id,
            conversation_id=row.conversation_id,
            parent_id=row.parent_id,
            role=row.role,
            content=row.content,
            model=row.model,
            status=row.status,
            finish_reason=row.finish_reason,
            usage=usage,
            created_at=row.created_at,
        )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
