"""The byte store under the response and session caches: in memory, or in Redis.

`KeyValueStore` is deliberately small: bytes by key, each with its own expiry,
plus one atomic read-modify-write (`update`) so the session cache can change a
cached conversation without losing a concurrent change. It never raises for a
backend that is down (see `outage.py`): a failed read is a miss, a failed write
reports False or "failed". It knows nothing of what the bytes mean.

`MemoryKeyValueStore` is the embedded default: one process, bounded (LRU).
`RedisKeyValueStore` is shared by every replica; Redis's own eviction policy
(`maxmemory-policy`) bounds it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

import redis.asyncio as redis
from redis.exceptions import WatchError

from ziggurat.connection.cache.outage import BACKEND_ERRORS, OutageLog
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

UpdateOutcome = Literal["updated", "deleted", "missing", "failed"]
"""What `update` did: wrote the change, deleted the key, found no key, or could not tell (backend down
or too much contention): after "failed" the caller must assume the entry is stale."""

Change = Callable[[bytes], bytes | None]
"""Turns the current value into the new one (None deletes the key). Must be pure: it may run more
than once when a concurrent writer wins the race."""


class KeyValueStore(Protocol):
    """Bytes by key with a per-entry expiry. Safe across tasks; never raises for an unreachable backend."""

    async def get(self, key: str, *, refresh_ttl_s: float | None = None) -> bytes | None:
        """The value, or None when absent, expired or unreachable; `refresh_ttl_s` restarts its expiry."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store `value` for `ttl_s` seconds; False when the write did not happen."""
        ...

    async def delete(self, *keys: str) -> bool:
        """Remove the keys (absent ones are fine); False when the delete did not happen."""
        ...

    async def update(self, key: str, change: Change, *, ttl_s: float) -> UpdateOutcome:
        """Atomically replace an existing value with `change(value)`, restarting its expiry.

        An absent key stays absent: `change` is not called.
        """
        ...

    async def ping(self) -> bool:
        """Whether the backend answers now (for health checks; logs nothing)."""
        ...


def _as_bytes(value: bytes | str) -> bytes:
    """Replies are bytes unless the client was made with `decode_responses=True`."""
    return value.encode() if isinstance(value, str) else value


def require_binary_replies(client: redis.Redis) -> None:
    """Cached values are arbitrary bytes, which a client made with `decode_responses=True` would mangle."""
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("the cache needs a Redis client without decode_responses")


def _milliseconds(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s * 1000))


class MemoryKeyValueStore:
    """At most `max_entries` entries, least recently used evicted first; expired ones read as absent.

    An expired entry is dropped when it is read or when it reaches the old end of the LRU order, so
    the bound counts it until then. Every method completes without awaiting, which is what makes
    `update` atomic within the event loop.
    """

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def _put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (value, self._clock() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: str, *, refresh_ttl_s: float | None = None) -> bytes | None:
        value = self._live(key)
        if value is not None and refresh_ttl_s is not None:
            self._entries[key] = (value, self._clock() + refresh_ttl_s)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        self._put(key, value, ttl_s)
        return True

    async def delete(self, *keys: str) -> bool:
        for key in keys:
            self._entries.pop(key, None)
        return True

    async def update(self, key: str, change: Change, *, ttl_s: float) -> UpdateOutcome:
        current = self._live(key)
        if current is None:
            return "missing"
        new = change(current)
        if new is None:
            del self._entries[key]
            return "deleted"
        self._put(key, new, ttl_s)
        return "updated"

    async def ping(self) -> bool:
        return True


class RedisKeyValueStore:
    """Keys live under `{prefix}:`; every call gives up after `timeout_s` and counts as a miss.

    `update` is optimistic (WATCH/MULTI): it reads, applies the change and writes only if nobody wrote
    the key in between, trying `update_attempts` times before it reports "failed".
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        timeout_s: float = 0.5,
        update_attempts: int = 5,
        name: str = "redis",
    ) -> None:
        require_binary_replies(client)
        self._client = client
        self._prefix = f"{prefix}:"
        self._timeout_s = timeout_s
        self._update_attempts = update_attempts
        self._outage = OutageLog(name)

    async def get(self, key: str, *, refresh_ttl_s: float | None = None) -> bytes | None:
        name = self._prefix + key
        try:
            async with asyncio.timeout(self._timeout_s):
                if refresh_ttl_s is None:
                    value = await self._client.get(name)
                else:
                    value = await self._client.getex(name, px=_milliseconds(refresh_ttl_s))
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="get")
            return None
        self._outage.succeeded()
        return _as_bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.set(self._prefix + key, value, px=_milliseconds(ttl_s))
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="set")
            return False
        self._outage.succeeded()
        return True

    async def delete(self, *keys: str) -> bool:
        if not keys:
            return True
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.delete(*(self._prefix + key for key in keys))
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="delete")
            return False
        self._outage.succeeded()
        return True

    async def update(self, key: str, change: Change, *, ttl_s: float) -> UpdateOutcome:
        try:
            async with asyncio.timeout(self._timeout_s):
                outcome = await self._update(self._prefix + key, change, _milliseconds(ttl_s))
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="update")
            return "failed"
        self._outage.succeeded()
        return outcome

    async def _update(self, name: str, change: Change, ttl_ms: int) -> UpdateOutcome:
        async with self._client.pipeline(transaction=True) as pipe:
            for _ in range(self._update_attempts):
                try:
                    await pipe.watch(name)
                    current = await pipe.get(name)
                    if current is None:
                        return "missing"
                    new = change(_as_bytes(current))
                    pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
                    if new is None:
                        pipe.delete(name)
                    else:
                        pipe.set(name, new, px=ttl_ms)
                    await pipe.execute()
                    return "updated" if new is not None else "deleted"
                except WatchError:
                    continue
        log.debug("cache_update_contended", attempts=self._update_attempts)
        return "failed"

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.ping()
        except BACKEND_ERRORS:
            return False
        return True
