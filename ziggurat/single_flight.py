"""Concurrent callers asking for the same thing share one run of the work.

A cache in front of the database is empty (or stale) for every request that
arrives in the same moment: without this, a hundred concurrent requests at a
cache's expiry each made the same query. Importable from any layer; it knows
nothing but asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class SingleFlight(Generic[Key, Value]):
    """`run(key, work)`: joins the run of `work` for `key` in flight, or starts one.

    The run is shielded: a caller that is cancelled leaves it running for the
    others. Its result or exception goes to every caller that joined; the next
    call after it ended starts afresh.
    """

    def __init__(self) -> None:
        self._running: dict[Key, asyncio.Future[Value]] = {}

    async def run(self, key: Key, work: Callable[[], Awaitable[Value]]) -> Value:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(work())
            self._running[key] = running
            running.add_done_callback(partial(self._ended, key))
        return await asyncio.shield(running)

    def forget(self, key: Key) -> None:
        """Later callers start a run of their own instead of joining the one in flight."""
        self._running.pop(key, None)

    def _ended(self, key: Key, run: asyncio.Future[Value]) -> None:
        if self._running.get(key) is run:
            del self._running[key]
        if not run.cancelled():
            run.exception()  # retrieved here too, in case every caller was cancelled meanwhile
