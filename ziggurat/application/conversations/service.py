"""Conversations: create, list, search, read, change, switch branch, delete and purge.

Chatting (posting, editing, regenerating, stopping) lives in `chat.py`; this
service owns everything else about a conversation. Reading a conversation
returns the path the user looks at (see `tree.py`) with, for every message on
it, how many alternatives it has, so a client can offer `‹ 2/3 ›`.

Deleting is soft: `deleted_at` hides a conversation from every read at once
(lists, search, chat, feedback) and `purge_deleted` removes it for good after
the retention period, from the `ziggurat purge-deleted` command.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import ModelResolver
from ziggurat.application.conversations.models import Conversation, Message
from ziggurat.application.conversations.repository import ConversationRepository, ListPosition
from ziggurat.application.conversations.schemas import (
    MAX_PAGE_SIZE,
    MAX_SEARCH_RESULTS,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    MessageOut,
    PathMessageOut,
    SearchHit,
    SearchResults,
)
from ziggurat.application.conversations.search import ConversationSearch, make_snippet
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.conversations.turn_plan import MESSAGE_NOT_FOUND
from ziggurat.application.presets.repository import PresetRepository
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Forbidden, InvalidRequest, NotFound
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

CONVERSATION_NOT_FOUND = "No conversation with this id."
_PRESET_NOT_FOUND = "No preset with this id."
_BAD_CURSOR = "The cursor is invalid; use next_cursor from a previous page."


class ConversationService:
    def __init__(self, *, database: Database, resolve_model: ModelResolver) -> None:
        self._database = database
        self._resolve_model = resolve_model

    async def create(self, principal: Principal, request: ConversationCreate) -> ConversationOut:
        if request.model:
            await self._resolve_model(principal, request.model)
        now = utcnow()
        title = (request.title or "").strip() or None
        conversation = Conversation(
            id=new_id(),
            user_id=principal.user_id,
            title=title,
            title_source="user" if title else None,
            model=request.model or None,
            system_prompt=request.system_prompt or None,
            preset_id=request.preset_id or None,
            is_pinned=False,
            is_archived=False,
            created_at=now,
            updated_at=now,
        )
        async with self._database.session() as session:
            if conversation.preset_id is not None:
                await _check_preset(PresetRepository(session), principal, conversation.preset_id)
            await ConversationRepository(session).add(conversation)
            await session.commit()
        return ConversationOut.from_row(conversation)

    async def list_conversations(
        self, principal: Principal, *, archived: bool = False, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """Live (or, with `archived`, archived) conversations: pinned first, then newest first."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}.", param="limit")
        after = decode_cursor(cursor) if cursor else None
        async with self._database.session() as session:
            rows = await ConversationRepository(session).list_page(
                principal.user_id, is_archived=archived, limit=limit + 1, after=after
            )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return ConversationPage(data=[ConversationOut.from_row(row) for row in page], next_cursor=next_cursor)

    async def get(self, principal: Principal, conversation_id: str) -> ConversationDetail:
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            messages = await repository.list_messages(principal.user_id, conversation_id)
        return detail_of(conversation, messages)

    async def update(
        self, principal: Principal, conversation_id: str, request: ConversationUpdate
    ) -> ConversationOut:
        changes = request.model_dump(exclude_unset=True)
        if changes.get("model"):
            await self._resolve_model(principal, changes["model"])
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            if changes.get("preset_id"):
                await _check_preset(PresetRepository(session), principal, changes["preset_id"])
            _apply(conversation, changes)
            await session.commit()
        return ConversationOut.from_row(conversation)

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        async with self._database.session() as session:
            conversation = await owned_conversation(
                ConversationRepository(session), principal, conversation_id
            )
            conversation.deleted_at = utcnow()
            await session.commit()
        log.info("conversation_deleted", conversation_id=conversation_id)

    async def select_branch(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> ConversationDetail:
        """Show the branch through `message_id`, down to the newest leaf below it."""
        async with self._database.session() as session:
            repository = ConversationRepository(session)
            conversation = await owned_conversation(repository, principal, conversation_id)
            messages = await repository.list_messages(principal.user_id, conversation_id)
            tree = MessageTree(messages)
            selected = tree.get(message_id)
            if selected is None:
                raise NotFound(MESSAGE_NOT_FOUND, param="message_id")
            conversation.current_leaf_id = tree.newest_leaf_under(selected).id
            await session.commit()
        return detail_of(conversation, messages)

    async def search(self, principal: Principal, query: str, *, limit: int = 20) -> SearchResults:
        if not 1 <= limit <= MAX_SEARCH_RESULTS:
            raise InvalidRequest(f"limit must be between 1 and {MAX_SEARCH_RESULTS}.", param="limit")
        async with self._database.session() as session:
            search = ConversationSearch(session, is_postgres=not self._database.is_sqlite)
            terms = search.terms(query)
            rows = await search.search(principal.user_id, query, limit=limit)
        hits: list[SearchHit] = []
        for row in rows:
            source = row.message.content if row.message is not None else row.conversation.title or ""
            snippet = make_snippet(source, terms)
            hits.append(
                SearchHit(
                    conversation=ConversationOut.from_row(row.conversation),
                    message_id=row.message.id if row.message is not None else None,
                    role=row.message.role if row.message is not None else None,
                    snippet=snippet.text,
                    highlights=snippet.highlights,
                    created_at=row.message.created_at
                    if row.message is not None
                    else row.conversation.updated_at,
                )
            )
        return SearchResults(data=hits)

    async def purge_deleted(self, principal: Principal, *, older_than: timedelta) -> int:
        return await purge_deleted(self._database, principal, older_than=older_than)


async def purge_deleted(database: Database, principal: Principal, *, older_than: timedelta) -> int:
    """Remove for good what was deleted more than `older_than` ago; how many conversations went.

    A function as well as a method, so the `ziggurat purge-deleted` command can run it
    with nothing but the database.
    """
    if not principal.is_admin:
        raise Forbidden("Purging deleted conversations needs the admin permission.")
    cutoff = utcnow() - older_than
    async with database.session() as session:
        purged = await ConversationRepository(session).purge_deleted(deleted_before=cutoff)
        await session.commit()
    log.info("conversations_purged", count=purged, deleted_before=cutoff.isoformat())
    return purged


async def owned_conversation(
    repository: ConversationRepository, principal: Principal, conversation_id: str
) -> Conversation:
    # Another user's conversation is "not found", never "forbidden": existence must not leak.
    conversation = await repository.get(principal.user_id, conversation_id)
    if conversation is None:
        raise NotFound(CONVERSATION_NOT_FOUND, param="conversation_id")
    return conversation


async def _check_preset(repository: PresetRepository, principal: Principal, preset_id: str) -> None:
    if await repository.get(principal.user_id, preset_id) is None:
        raise NotFound(_PRESET_NOT_FOUND, param="preset_id")


def _apply(conversation: Conversation, changes: dict[str, object]) -> None:
    if "title" in changes:
        title = str(changes["title"] or "").strip() or None
        conversation.title = title
        conversation.title_source = "user" if title else None
    for field in ("model", "system_prompt", "preset_id"):
        if field in changes:
            setattr(conversation, field, changes[field] or None)
    if changes.get("pinned") is not None:
        conversation.is_pinned = bool(changes["pinned"])
    if changes.get("archived") is not None:
        conversation.is_archived = bool(changes["archived"])


def detail_of(conversation: Conversation, messages: list[Message]) -> ConversationDetail:
    """The conversation with its shown path, each message with its alternatives."""
    tree = MessageTree(messages)
    path = tree.active_path(conversation.current_leaf_id)
    shown: list[PathMessageOut] = []
    for message in path:
        sibling_ids = [sibling.id for sibling in tree.siblings(message)]
        shown.append(
            PathMessageOut(
                **MessageOut.from_row(message).model_dump(),
                sibling_index=sibling_ids.index(message.id),
                sibling_count=len(sibling_ids),
                sibling_ids=sibling_ids,
            )
        )
    return ConversationDetail(
        **ConversationOut.from_row(conversation).model_dump(),
        current_leaf_id=path[-1].id if path else None,
        messages=shown,
    )


def encode_cursor(conversation: Conversation) -> str:
    text = f"{int(conversation.is_pinned)}|{conversation.updated_at.isoformat()}|{conversation.id}"
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str) -> ListPosition:
    try:
        pinned, stamp, conversation_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 2)
        updated_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest(_BAD_CURSOR, param="cursor") from exc
    if updated_at.tzinfo is None or pinned not in ("0", "1"):
        raise InvalidRequest(_BAD_CURSOR, param="cursor")
    return ListPosition(is_pinned=pinned == "1", updated_at=updated_at, conversation_id=conversation_id)
