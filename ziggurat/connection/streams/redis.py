"""Event streams in Redis: the production `EventStreams`, shared by every gateway and worker.

Per job, under `{prefix}`: `:s:{job}` the stream (entries as in `codec.py`),
`:e:{job}` the epoch counter, `:c:{job}` the cancel flag and `:d:{job}` the
marker that the stream holds its end, so a claim need not scan for it. Every
write refreshes their expiry to `ttl_s`. Cancellation is also published on one
channel, `{prefix}:cancel`, carrying the job id.

Claims, appends and cancels are Lua scripts (the `redis_*.lua` files beside
this module), so fencing and the ended marker can never disagree with the
stream. Reading is multiplexed by `redis_reader.py` (readers, timeouts) over
`redis_shard.py` (a few shared XREADs), cancellation signals by `redis_cancel.py`.
A gateway also owns `{prefix}:w:{instance}:{shard}`, short-lived wake-up streams.
Semantics match `memory.py`; the contract tests check both.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from ziggurat.connection.streams.base import (
    Appendable,
    AppendStatus,
    Chunk,
    Claim,
    StreamEntry,
    cancelled_end,
)
from ziggurat.connection.streams.codec import decode, encode
from ziggurat.connection.streams.redis_cancel import CancelWatcher
from ziggurat.connection.streams.redis_reader import StreamReader
from ziggurat.model.engine import TextDelta

_watches: set[asyncio.Task[None]] = set()
"""Cancel watches in flight (`on_cancelled`): the loop keeps only weak references to tasks."""

_PING_TIMEOUT_S = 1.0
_APPEND_STATUSES = (AppendStatus.OK, AppendStatus.FENCED, AppendStatus.LOST)
"""Indexed by the append script's reply."""


@cache
def _script(name: str) -> str:
    return resources.files("ziggurat.connection.streams").joinpath(f"redis_{name}.lua").read_text()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(items: Sequence[Appendable]) -> list[str]:
    """The append script's per-entry arguments: is_end, field count, then names and values."""
    args: list[str] = []
    for item in items:
        fields = encode(item)
        args.append("0" if isinstance(item, Chunk) else "1")
        args.append(str(2 * len(fields)))
        for name, value in fields.items():
            args.append(name)
            args.append(value)
    return args


class RedisStreams:
    """`EventStreams` on Redis. Safe across tasks, processes and hosts.

    `client` may decode replies or not; the connections this class opens for
    itself (one per reader shard, one for cancel signals) copy its address and
    credentials. `aclose()` closes those, and `client` too when `from_url` made it.
    """

    appends_cost_a_round_trip = True

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        max_entries: int,
        ttl_s: float,
        first_event_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._max_entries = str(max_entries)
        self._ttl_ms = str(max(1, round(ttl_s * 1000)))
        self._claim_script = client.register_script(_script("claim"))
        self._append_script = client.register_script(_script("append"))
        self._cancel_script = client.register_script(_script("cancel"))
        self._owns_client = False
        self.instance_id = secrets.token_hex(6)
        self._reader = StreamReader(
            client,
            connect=self._connection,
            wake_key_prefix=f"{prefix}:w:{self.instance_id}",
            first_event_timeout_s=first_event_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )
        self._cancels = CancelWatcher(
            client,
            connection=self._connection(f"{prefix}:cancels:{self.instance_id}"),
            channel=f"{prefix}:cancel",
            cancel_key=lambda job_id: self._key("c", job_id),
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        max_entries: int,
        ttl_s: float,
        first_event_timeout_s: float,
        idle_timeout_s: float,
    ) -> RedisStreams:
        client = redis.asyncio.from_url(url, decode_responses=True)
        streams = cls(
            client,
            prefix=prefix,
            max_entries=max_entries,
            ttl_s=ttl_s,
            first_event_timeout_s=first_event_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )
        streams._owns_client = True
        return streams

    def _key(self, kind: str, job_id: str) -> str:
        return f"{self._prefix}:{kind}:{job_id}"

    def _connection(self, name: str) -> AbstractConnection:
        """A connection of our own, outside the client's pool: XREAD BLOCK and SUBSCRIBE hold theirs.

        It decodes to `str` over RESP2 (the reply shapes the reader parses), has
        no socket timeout (a blocked read is bounded by the caller) and never
        retries by itself: the reader and the listener reconnect and then
        re-check what they may have missed.
        """
        pool = self._client.connection_pool
        kwargs = {
            name: value
            for name, value in pool.connection_kwargs.items()
            if not name.startswith(("maint_notifications", "orig_"))
        }
        kwargs.update(
            decode_responses=True,
            protocol=2,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            retry_on_error=[],
            health_check_interval=0,
            client_name=name,
        )
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection

    async def claim(self, job_id: str) -> Claim:
        keys = [self._key(kind, job_id) for kind in ("s", "e", "c", "d")]
        reply: list[Any] = await self._claim_script(keys=keys, args=[self._ttl_ms])
        if reply[0] == -1:
            return Claim("finished")
        epoch, cancelled, raw_entries = reply
        parts: list[str] = []
        tokens = 0
        for raw_id, flat in raw_entries:
            values = [_text(value) for value in flat]
            entry = decode(_text(raw_id), dict(zip(values[::2], values[1::2], strict=True)))
            if isinstance(entry.event, TextDelta):
                parts.append(entry.event.text)
                tokens += entry.tokens
        return Claim("cancelled" if cancelled else "run", int(epoch), "".join(parts), tokens)

    async def append(self, batch: Mapping[str, tuple[int, Sequence[Appendable]]]) -> dict[str, AppendStatus]:
        """One pipelined round trip of EVALSHA calls, one per job (more only if Redis forgot the script)."""
        jobs = list(batch)
        replies = dict(zip(jobs, await self._run_appends(batch, jobs), strict=True))
        missing = [job_id for job_id, reply in replies.items() if isinstance(reply, NoScriptError)]
        if missing:
            self._append_script.sha = await self._client.script_load(self._append_script.script)
            replies.update(zip(missing, await self._run_appends(batch, missing), strict=True))
        statuses: dict[str, AppendStatus] = {}
        for job_id, reply in replies.items():
            if isinstance(reply, Exception):
                raise reply
            statuses[job_id] = _APPEND_STATUSES[int(reply)]
        return statuses

    async def _run_appends(
        self, batch: Mapping[str, tuple[int, Sequence[Appendable]]], jobs: list[str]
    ) -> list[Any]:
        # Plain EVALSHA, not the Script object: in a pipeline that adds a SCRIPT EXISTS round trip.
        sha = self._append_script.sha
        async with self._client.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                epoch, items = batch[job_id]
                keys = (self._key("s", job_id), self._key("e", job_id), self._key("d", job_id))
                pipe.evalsha(sha, 3, *keys, str(epoch), self._ttl_ms, self._max_entries, *_fields(items))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def read(self, job_id: str, *, after: str | None = None) -> AsyncGenerator[StreamEntry, None]:
        return self._reader.read(self._key("s", job_id), after)

    async def cancel(self, job_id: str) -> None:
        keys = [self._key(kind, job_id) for kind in ("c", "e", "s", "d")]
        end = [value for pair in encode(cancelled_end()).items() for value in pair]
        args = [self._ttl_ms, f"{self._prefix}:cancel", job_id, self._max_entries, *end]
        await self._cancel_script(keys=keys, args=args)

    def on_cancelled(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        # A task per job: the wait starts with a check of the job's cancel key, a round trip.
        watching = asyncio.get_running_loop().create_task(self._cancels.wait(job_id))
        _watches.add(watching)
        watching.add_done_callback(_watches.discard)

        def call_back(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is None:
                callback()

        watching.add_done_callback(call_back)

        def unwatch() -> None:
            watching.cancel()

        return unwatch

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self._reader.aclose()
        await self._cancels.aclose()
        if self._owns_client:
            await self._client.aclose()
