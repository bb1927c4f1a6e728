"""Cancellation signals for the jobs a worker runs: one pub/sub subscription per process.

`RedisStreams.cancel` sets a job's cancel key and publishes the job id on one
channel. A worker waits on a local `asyncio.Event` per job, set by a single
listener task, instead of holding a subscription (and a connection) per job.
Pub/sub forgets what it published while a subscriber was away, so the cancel
keys stay the source of truth: they are checked when a wait starts and again,
for every waiter, each time the listener (re)subscribes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from ziggurat.cancellation import cancel_and_wait
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_SILENCE_PING_S = 30.0
"""Ping after this long without a message; a second silence means the connection is dead."""
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


@dataclass(slots=True, eq=False)
class _Waiter:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class CancelWatcher:
    """`wait(job_id)` returns once the job's cancel key exists or its id is published on `channel`."""

    def __init__(
        self,
        client: Redis,
        *,
        connection: AbstractConnection,
        channel: str,
        cancel_key: Callable[[str], str],
    ) -> None:
        self._client = client
        self._connection = connection
        self._channel = channel
        self._cancel_key = cancel_key
        self._waiters: dict[str, _Waiter] = {}
        self._listener: asyncio.Task[None] | None = None

    @property
    def waiter_count(self) -> int:
        return len(self._waiters)

    async def wait(self, job_id: str) -> None:
        waiter = self._waiters.get(job_id)
        if waiter is None:
            waiter = self._waiters[job_id] = _Waiter()
        waiter.count += 1
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="stream-cancel-listener")
        try:
            try:
                if await self._client.exists(self._cancel_key(job_id)):
                    waiter.event.set()
            except (RedisError, OSError) as exc:
                # Raising would stop the job as if cancelled; the listener checks again once it reconnects.
                log.warning("cancel_check_failed", job_id=job_id, error_type=type(exc).__name__)
            await waiter.event.wait()
        finally:
            waiter.count -= 1
            if not waiter.count:
                del self._waiters[job_id]

    async def _listen_forever(self) -> None:
        backoff_s = _FIRST_BACKOFF_S
        is_failing = False
        while True:
            try:
                await self._subscribe()
                await self._check_all()
                if is_failing:
                    log.info("cancel_listener_recovered")
                    is_failing, backoff_s = False, _FIRST_BACKOFF_S
                await self._receive()
            except (RedisError, OSError) as exc:
                if not is_failing:
                    log.warning("cancel_listener_failed", error_type=type(exc).__name__)
                    is_failing = True
                await self._connection.disconnect(nowait=True)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)

    async def _subscribe(self) -> None:
        await self._connection.send_command("SUBSCRIBE", self._channel, check_health=False)
        if await self._connection.read_response(timeout=_SILENCE_PING_S) is None:
            raise OSError("no reply to SUBSCRIBE")

    async def _check_all(self) -> None:
        """Cancels published while the listener was away: their keys are still there."""
        job_ids = list(self._waiters)
        if not job_ids:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(self._cancel_key(job_id))
            found = await pipe.execute()
        for job_id, exists in zip(job_ids, found, strict=True):
            waiter = self._waiters.get(job_id)
            if exists and waiter is not None:
                waiter.event.set()

    async def _receive(self) -> None:
        is_ping_pending = False
        while True:
            message = await self._connection.read_response(timeout=_SILENCE_PING_S)
            if message is None:
                if is_ping_pending:
                    raise OSError("cancel channel went silent")
                await self._connection.send_command("PING", check_health=False)
                is_ping_pending = True
                continue
            is_ping_pending = False
            if message[0] == "message":
                waiter = self._waiters.get(message[2])
                if waiter is not None:
                    waiter.event.set()

    async def aclose(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
        await self._connection.disconnect()
