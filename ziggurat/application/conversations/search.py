"""Search over one user's conversation titles and message text, with snippets.

PostgreSQL uses full-text search: `to_tsvector('simple', ...) @@
plainto_tsquery('simple', query)`, served by the GIN expression indexes of
migration 0003 (the `simple` configuration: no stemming and no stop words, so
it behaves the same for every language, and a word matches only whole). The
SQL repeats the indexed expressions literally, because the planner uses an
expression index only for the identical expression.

SQLite, the single-machine default, uses `LIKE` on every term instead of an
FTS5 table. Its scan is bounded by one user's messages (found through the
conversation index), which is milliseconds at personal scale; it matches
inside words, which matters for Chinese and Japanese text that has no spaces
(FTS5's default tokenizer would index a whole sentence as one token); and it
needs no shadow tables or triggers that every write and every migration would
have to keep in step. Either way every term must occur (AND), results are
newest first, and only the caller's live conversations are searched.

Snippets are cut in Python, identically for both databases: plain text around
the first match, with the offsets of every match, so a client can highlight
without rendering HTML from the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.conversations.models import Conversation, Message

MAX_TERMS = 8
SNIPPET_CHARS = 160
_WORD = re.compile(r"\w+")


@dataclass(slots=True, frozen=True)
class SearchRow:
    conversation: Conversation
    message: Message | None


@dataclass(slots=True, frozen=True)
class Snippet:
    text: str
    highlights: list[tuple[int, int]]


class ConversationSearch:
    """Runs one search for one user; gets its session in `__init__`."""

    def __init__(self, session: AsyncSession, *, is_postgres: bool) -> None:
        self._session = session
        self._is_postgres = is_postgres

    def terms(self, query: str) -> list[str]:
        """The words that must all match (and that snippets highlight)."""
        words = _WORD.findall(query) if self._is_postgres else query.split()
        return list(dict.fromkeys(word for word in words if word))[:MAX_TERMS]

    async def search(self, user_id: str, query: str, *, limit: int) -> list[SearchRow]:
        """Title matches first (one per conversation), then message matches, newest first."""
        terms = self.terms(query)
        if not terms:
            return []
        visible = and_(Conversation.user_id == user_id, Conversation.deleted_at.is_(None))
        titles = await self._session.scalars(
            select(Conversation)
            .where(visible, self._matches(Conversation.title, terms))
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(limit)
        )
        rows = [SearchRow(conversation, None) for conversation in titles]
        if len(rows) >= limit:
            return rows
        messages = await self._session.execute(
            select(Message, Conversation)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(visible, Message.role.in_(("user", "assistant")), Message.content != "")
            .where(self._matches(Message.content, terms))
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit - len(rows))
        )
        rows.extend(SearchRow(conversation, message) for message, conversation in messages)
        return rows

    def _matches(self, column: SQLColumnExpression[Any], terms: list[str]) -> ColumnElement[bool]:
        if self._is_postgres:
            simple: ColumnElement[str] = literal_column("'simple'")
            vector = func.to_tsvector(simple, column)
            matched: ColumnElement[bool] = vector.op("@@")(func.plainto_tsquery(simple, " ".join(terms)))
            return matched
        return and_(*(column.ilike(f"%{_escape_like(term)}%", escape="\\") for term in terms))


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def make_snippet(text: str, terms: list[str], *, width: int = SNIPPET_CHARS) -> Snippet:
    """About `width` characters of `text` around its first match, whitespace collapsed."""
    pattern = re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE) if terms else None
    first = pattern.search(text) if pattern is not None else None
    start = max(0, first.start() - width // 3) if first is not None else 0
    if start > 0:
        # Start at a word boundary when one is near, rather than mid-word.
        space = text.find(" ", start, first.start() if first is not None else start)
        start = space + 1 if space != -1 else start
    end = min(len(text), start + width)
    snippet = " ".join(text[start:end].split())
    if start > 0:
        snippet = "…" + snippet
    if end < len(text):
        snippet += "…"
    highlights = [(match.start(), match.end()) for match in pattern.finditer(snippet)] if pattern else []
    return Snippet(snippet, highlights)
