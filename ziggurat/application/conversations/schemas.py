"""Pydantic API types for conversations and messages."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ziggurat.application.conversations.models import (
    MODEL_NAME_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    Conversation,
    Message,
)
from ziggurat.application.store.orm import ID_LENGTH

# About 8k tokens of text: a long question, not a document upload (that is a later feature).
MAX_MESSAGE_CHARS = 32_000
MAX_SYSTEM_PROMPT_CHARS = 16_000
MAX_REPLY_TOKENS = 32_768
MAX_PAGE_SIZE = 100
MAX_SEARCH_RESULTS = 50
MAX_SEARCH_QUERY_CHARS = 200


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationCreate(_Request):
    title: str | None = Field(default=None, max_length=TITLE_MAX_LENGTH)
    model: str | None = Field(default=None, max_length=MODEL_NAME_MAX_LENGTH)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    preset_id: str | None = Field(default=None, max_length=ID_LENGTH)


class ConversationUpdate(_Request):
    """Fields left out keep their value; `null` clears an optional one."""

    title: str | None = Field(default=None, max_length=TITLE_MAX_LENGTH)
    model: str | None = Field(default=None, max_length=MODEL_NAME_MAX_LENGTH)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    preset_id: str | None = Field(default=None, max_length=ID_LENGTH)
    pinned: bool | None = None
    archived: bool | None = None


class GenerationOverrides(_Request):
    """Per-message parameters; unset ones come from the conversation, then its preset."""

    model: str | None = Field(default=None, max_length=MODEL_NAME_MAX_LENGTH)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_REPLY_TOKENS)


class MessageCreate(GenerationOverrides):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("the message is empty")
        return content


class ConversationOut(BaseModel):
    id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    preset_id: str | None
    pinned: bool
    archived: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Conversation) -> ConversationOut:
        return cls(
            id=row.id,
            title=row.title,
            model=row.model,
            system_prompt=row.system_prompt,
            preset_id=row.preset_id,
            pinned=row.is_pinned,
            archived=row.is_archived,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


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


class PathMessageOut(MessageOut):
    """A message on the shown path and its alternatives (a UI shows `‹ sibling_index+1 / sibling_count ›`)."""

    sibling_index: int = Field(description="Position among the messages with the same parent, from 0.")
    sibling_count: int
    sibling_ids: list[str] = Field(description="All alternatives, oldest first; select one to switch branch.")


class ConversationDetail(ConversationOut):
    current_leaf_id: str | None = Field(description="The last message of the shown path.")
    messages: list[PathMessageOut] = Field(description="The shown path, root first.")


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class SearchHit(BaseModel):
    conversation: ConversationOut
    message_id: str | None = Field(description="The matching message; null when the title matched.")
    role: str | None
    snippet: str = Field(description="Plain text around the first match.")
    highlights: list[tuple[int, int]] = Field(description="[start, end) offsets of matches in `snippet`.")
    created_at: datetime


class SearchResults(BaseModel):
    data: list[SearchHit]
