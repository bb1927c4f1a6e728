"""The rows a chat turn adds: the user's message and the `streaming` placeholder of its reply.

Timestamps are strictly increasing along a branch (`after`), so the order of
messages never depends on the clock's resolution; a conversation without a
title takes one from its first message (`title_from`) until a better one is
written (`titles.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ziggurat.application.conversations.models import Message
from ziggurat.application.store.orm import utcnow

TITLE_FROM_MESSAGE_CHARS = 80


def new_reply(
    reply_id: str, user_message: Message, model: str, key: str | None, job_id: str, *, after: datetime | None
) -> Message:
    """The reply's placeholder, `streaming` until its job's answer is stored."""
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
        job_id=job_id,
        created_at=later_than(previous),
    )


def later_than(previous: datetime | None) -> datetime:
    """Now, but strictly later than `previous`, so message order never depends on clock resolution."""
    now = utcnow()
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


def title_from(content: str) -> str:
    """A first message as a provisional title: one line, at most `TITLE_FROM_MESSAGE_CHARS` characters."""
    line = " ".join(content.split())
    if len(line) <= TITLE_FROM_MESSAGE_CHARS:
        return line
    return line[: TITLE_FROM_MESSAGE_CHARS - 1].rstrip() + "…"
