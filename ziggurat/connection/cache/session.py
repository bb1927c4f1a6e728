"""The session cache: the recent context of active conversations, so a new message skips a query.

Write-through and never authoritative: the database stays the source of truth,
the caller writes there first and then tells the cache (`append`, `update`), or
drops the entry (`invalidate`) when unsure. The cached value is the
conversation's message rows as plain JSON objects in order; what a row holds is
the caller's choice, except that rows are matched by their `id_field`. Values
go through JSON in both implementations, so a `datetime` comes back as an ISO
string and a tuple as a list.

Every access restarts the entry's expiry (`ttl_s`), so an active conversation
stays cached and an idle one leaves. `append` and `update` never create an
entry: a partial list would pass for the whole conversation. `append` of a row
whose id is already cached replaces it, so replaying a write is harmless.
`update` of a row that is not cached drops the entry, since the cache then
disagrees with the database.

Races. `append`/`update` are atomic read-modify-writes (the memory store
applies them without awaiting; Redis retries them under WATCH/MULTI), so two
concurrent writers never lose each other's change. One race remains, as in any
cache filled after a read: a caller that read the rows from the database, then
`put`s them, can overwrite an `append` that happened in between with its older
rows; the entry is then stale until it is invalidated or expires. Callers `put`
only after a miss and `invalidate` when they change history in other ways.

Failures. When Redis cannot take a write, the entry may now be stale, so it is
deleted; if the delete fails too, this process remembers the conversation
(bounded) and treats it as a miss, deleting it again, until a delete or a `put`
gets through. Other replicas may still read the stale entry until then or until
it expires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ziggurat.connection.cache.kv import Change, KeyValueStore
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

Row = dict[str, Any]
"""One message row as a JSON object; the fields are the caller's (its values must be JSON-encodable)."""


def _key(conversation_id: str) -> str:
    return f"sess:{conversation_id}"


def _decode(raw: bytes) -> list[Row] | None:
    try:
        rows = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return None
    return rows


class SessionCache:
    """Message rows by conversation id over a `KeyValueStore`; never raises for an unreachable backend.

    The memory store's `max_entries` is the bound on conversations kept (least recently used first).
    """

    def __init__(
        self, store: KeyValueStore, *, ttl_s: float, id_field: str = "id", max_suspects: int = 10_000
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._id_field = id_field
        self._max_suspects = max_suspects
        self._suspects: OrderedDict[str, None] = OrderedDict()

    async def get(self, conversation_id: str) -> list[Row] | None:
        if conversation_id in self._suspects:
            await self.invalidate(conversation_id)
            return None
        raw = await self._store.get(_key(conversation_id), refresh_ttl_s=self._ttl_s)
        if raw is None:
            return None
        rows = _decode(raw)
        if rows is None:
            log.warning("session_cache_entry_unreadable", conversation_id=conversation_id)
            await self.invalidate(conversation_id)
        return rows

    async def put(
        self, conversation_id: str, rows: Sequence[Mapping[str, Any]], ttl_s: float | None = None
    ) -> None:
        """Replace the cached rows; `ttl_s` (default: the cache's) applies until the next access."""
        body = orjson.dumps([dict(row) for row in rows])
        if await self._store.set(_key(conversation_id), body, self._ttl_s if ttl_s is None else ttl_s):
            self._suspects.pop(conversation_id, None)
        else:
            await self._distrust(conversation_id)

    async def append(self, conversation_id: str, row: Mapping[str, Any]) -> None:
        """Add a row at the end (or replace the cached row with its id); no entry, no change."""
        new_row = dict(row)
        row_id = new_row.get(self._id_field)

        def change(raw: bytes) -> bytes | None:
            rows = _decode(raw)
            if rows is None:
                return None
            for index, existing in enumerate(rows):
                if row_id is not None and existing.get(self._id_field) == row_id:
                    rows[index] = new_row
                    break
            else:
                rows.append(new_row)
            return orjson.dumps(rows)

        await self._change(conversation_id, change)

    async def update(self, conversation_id: str, row_id: str, changes: Mapping[str, Any]) -> None:
        """Merge `changes` into the cached row with this id; drops the entry if that row is not cached."""
        updates = dict(changes)

        def change(raw: bytes) -> bytes | None:
            rows = _decode(raw)
            if rows is None:
                return None
            for row in rows:
                if row.get(self._id_field) == row_id:
                    row.update(updates)
                    return orjson.dumps(rows)
            return None

        await self._change(conversation_id, change)

    async def invalidate(self, conversation_id: str) -> None:
        if await self._store.delete(_key(conversation_id)):
            self._suspects.pop(conversation_id, None)
        else:
            self._suspect(conversation_id)

    async def _change(self, conversation_id: str, change: Change) -> None:
        outcome = await self._store.update(_key(conversation_id), change, ttl_s=self._ttl_s)
        if outcome == "failed":
            await self._distrust(conversation_id)

    async def _distrust(self, conversation_id: str) -> None:
        """A write did not happen: whatever is cached for the conversation may be stale."""
        self._suspect(conversation_id)
        await self.invalidate(conversation_id)

    def _suspect(self, conversation_id: str) -> None:
        self._suspects[conversation_id] = None
        self._suspects.move_to_end(conversation_id)
        if len(self._suspects) > self._max_suspects:
            self._suspects.popitem(last=False)
