"""Leases: which gateway looks after a piece of work, kept alive while that gateway lives.

A gateway that stores a streaming reply holds a lease on it and renews it; when
the gateway dies the lease lapses and another gateway takes the work over.
In-process leases serve the single-process default; Redis leases (`SET NX PX`,
renewed and released only by their holder, atomically) serve replicas.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as redis


class Leases(Protocol):
    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take the lease if nobody holds it (or `holder` already does)."""
        ...

    async def renew(self, name: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; False when `holder` no longer holds it."""
        ...

    async def release(self, name: str, holder: str) -> None: ...


class MemoryLeases:
    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, float]] = {}

    def _holder(self, name: str) -> str | None:
        lease = self._leases.get(name)
        if lease is None or lease[1] < time.monotonic():
            self._leases.pop(name, None)
            return None
        return lease[0]

    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        current = self._holder(name)
        if current not in (None, holder):
            return False
        self._leases[name] = (holder, time.monotonic() + ttl_s)
        return True

    async def renew(self, name: str, holder: str, ttl_s: float) -> bool:
        if self._holder(name) != holder:
            return False
        self._leases[name] = (holder, time.monotonic() + ttl_s)
        return True

    async def release(self, name: str, holder: str) -> None:
        if self._holder(name) == holder:
            del self._leases[name]


_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLeases:
    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._prefix = f"{prefix}:lease:"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        return bool(await self._acquire(keys=[self._prefix + name], args=[holder, int(ttl_s * 1000)]))

    async def renew(self, name: str, holder: str, ttl_s: float) -> bool:
        return bool(await self._renew(keys=[self._prefix + name], args=[holder, int(ttl_s * 1000)]))

    async def release(self, name: str, holder: str) -> None:
        await self._release(keys=[self._prefix + name], args=[holder])
