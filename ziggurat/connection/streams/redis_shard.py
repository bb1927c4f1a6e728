"""One Redis connection reading many streams with one `XREAD BLOCK`: the gateway's multiplexer.

A blocking XREAD per reader would hold one Redis connection per open stream
and cost a command per entry. Instead a `Shard` (one dedicated connection, one
task) reads all of its streams together and hands the entries to each local
reader's queue (`Subscriber`); readers decode them in their own task.

Cost per XREAD is kept independent of the number of streams where it can be:
the command is built by joining RESP pieces cached per stream (only a stream
that advanced re-encodes its id) and replies are matched to streams by one
dict lookup. Under load a shard waits `MIN_READ_INTERVAL_S` between XREADs, so
each one carries many entries instead of one.

Timeouts, decoding and which shard reads which stream are `redis_reader.py`'s.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from ziggurat.cancellation import cancel_and_wait
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

READ_COUNT = 128
"""Entries per stream per XREAD: below `QUEUE_LIMIT`, so a paused stream overshoots it by at most this."""
QUEUE_LIMIT = 256
"""A reader holding this many undelivered entries (a slow client) pauses its stream."""
BLOCK_MS = 1000
MIN_READ_INTERVAL_S = 0.01
"""Under load, the pause between XREADs: each costs Redis about 0.3 µs per stream it names, data or not."""
POLL_WHILE_QUIET_S = 0.1
"""How long a shard keeps polling after its last entry before it blocks again (see `_read_once`)."""
_WAKE_TTL_MS = 60_000
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0
_REPLY_TIMEOUT_S = 10.0
"""Beyond any blocking time: a reply this late means the connection died without a reset."""

RawEntry = list[Any]
"""`[entry_id, [field, value, ...]]` as the reply parser gives it."""

StreamId = tuple[int, int]


def id_key(entry_id: str) -> StreamId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


@dataclass(slots=True, eq=False)
class Subscriber:
    feed: Feed
    entries: deque[RawEntry] = field(default_factory=deque)
    waiter: asyncio.Future[bool] | None = None
    """What the reader awaits; its result says whether it timed out."""
    deadline: float = 0.0
    is_lost: bool = False
    skip_upto: StreamId | None = None
    """Entries up to this id are not for this reader: it has them already, or started after them."""

    def take(self, entries: list[RawEntry]) -> None:
        if self.skip_upto is not None:
            upto = self.skip_upto
            entries = [entry for entry in entries if id_key(entry[0]) > upto]
            if not entries:
                return
            self.skip_upto = None
        self.entries.extend(entries)
        self.wake()

    def wake(self, *, is_timeout: bool = False) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(is_timeout)


@dataclass(slots=True, eq=False)
class Feed:
    """One stream key in a shard's XREAD, shared by every local reader of that stream."""

    shard: Shard
    key: str
    key_arg: bytes
    last_id: str = "0-0"
    id_arg: bytes = b""
    subscribers: list[Subscriber] = field(default_factory=list)
    slot: int = -1
    """Index in the shard's XREAD arguments; -1 while paused or removed."""
    activated_round: int = 0
    """The shard's round when the feed (re)entered the XREAD: replies of that round or earlier skip it."""
    is_removed: bool = False

    def move_to(self, entry_id: str) -> None:
        self.last_id = entry_id
        self.id_arg = _bulk(entry_id)
        if self.slot >= 0:
            self.shard.id_args[self.slot] = self.id_arg

    def is_backlogged(self) -> bool:
        return any(len(s.entries) >= QUEUE_LIMIT for s in self.subscribers)


class Shard:
    """One connection and one task running `XREAD BLOCK` over the streams of its feeds.

    A wake-up stream (`wake_key`, first in every XREAD) ends a blocked XREAD
    when a stream joins: an XADD to it cannot be lost the way a CLIENT UNBLOCK
    sent just before the XREAD reaches Redis would be.
    """

    def __init__(self, client: Redis, connection: AbstractConnection, *, wake_key: str, index: int) -> None:
        self._client = client
        self.index = index
        self.wake_key = wake_key
        self._wake_key_arg = _bulk(self.wake_key)
        self._wake_id_arg = _bulk("0-0")
        self.feeds: dict[str, Feed] = {}
        self._active: list[Feed] = []
        self.key_args: list[bytes] = []
        self.id_args: list[bytes] = []
        self._round = 0
        self._is_blocked = False
        self._has_wake_pending = False
        self._has_work = asyncio.Event()
        self._connection = connection
        self._task: asyncio.Task[None] | None = None
        self._wake_task: asyncio.Task[None] | None = None

    def add(self, key: str, after: str) -> Feed:
        feed = Feed(self, key, _bulk(key))
        feed.move_to(after)
        self.feeds[key] = feed
        self.activate(feed)
        if self._task is None:
            self._task = asyncio.create_task(self._read_forever(), name=f"stream-reader-{self.index}")
        return feed

    def remove(self, feed: Feed) -> None:
        self.deactivate(feed)
        feed.is_removed = True
        del self.feeds[feed.key]

    def activate(self, feed: Feed) -> None:
        feed.slot = len(self._active)
        feed.activated_round = self._round
        self._active.append(feed)
        self.key_args.append(feed.key_arg)
        self.id_args.append(feed.id_arg)
        self._has_work.set()
        if self._is_blocked and not self._has_wake_pending:
            self._has_wake_pending = True
            self._wake_task = asyncio.create_task(self._send_wake(), name=f"stream-reader-wake-{self.index}")

    def deactivate(self, feed: Feed) -> None:
        slot = feed.slot
        if slot < 0:
            return
        last = self._active.pop()
        last_key, last_id = self.key_args.pop(), self.id_args.pop()
        if last is not feed:
            self._active[slot], self.key_args[slot], self.id_args[slot] = last, last_key, last_id
            last.slot = slot
        feed.slot = -1

    def rewind(self, feed: Feed, after: str) -> None:
        """Restart `feed` at `after`: replies already in flight for it are dropped, then re-read."""
        feed.move_to(after)
        feed.activated_round = self._round

    async def _send_wake(self) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1)
                pipe.pexpire(self.wake_key, _WAKE_TTL_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the XREAD's own timeout picks the new stream up
            log.info("stream_reader_wake_failed", shard=self.index, error_type=type(exc).__name__)

    async def _read_forever(self) -> None:
        backoff_s = _FIRST_BACKOFF_S
        is_failing = False
        last_data_at = -math.inf
        loop = asyncio.get_running_loop()
        while True:
            if not self._active:
                self._has_work.clear()
                await self._has_work.wait()
                continue
            started = loop.time()
            is_blocking = started - last_data_at > POLL_WHILE_QUIET_S
            try:
                if is_failing:
                    await self._end_lost_streams()
                reply = await self._read_once(block=is_blocking)
            except (RedisError, OSError) as exc:
                if not is_failing:
                    log.warning("stream_reader_failed", shard=self.index, error_type=type(exc).__name__)
                    is_failing = True
                await self._connection.disconnect(nowait=True)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                continue
            if is_failing:
                log.info("stream_reader_recovered", shard=self.index)
                is_failing, backoff_s = False, _FIRST_BACKOFF_S
            if reply:
                last_data_at = started
                self._dispatch(reply)
            if reply or not is_blocking:
                pause_s = started + MIN_READ_INTERVAL_S - loop.time()
                if pause_s > 0:
                    await asyncio.sleep(pause_s)

    async def _read_once(self, *, block: bool) -> list[Any] | None:
        """One XREAD; it blocks only once the streams have been quiet for `POLL_WHILE_QUIET_S`.

        A blocking XREAD costs Redis about four times a plain one (it registers
        with, and later leaves, every key), so while entries keep coming the
        shard polls every `MIN_READ_INTERVAL_S` instead.
        """
        self._round += 1
        count = len(self._active) + 1
        blocking = b"$5\r\nBLOCK\r\n%s" % _bulk(str(BLOCK_MS)) if block else b""
        header = b"*%d\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n%s%s$7\r\nSTREAMS\r\n" % (
            2 * count + (6 if block else 4),
            _bulk(str(READ_COUNT)),
            blocking,
        )
        keys, ids = b"".join(self.key_args), b"".join(self.id_args)
        command = b"".join((header, self._wake_key_arg, keys, self._wake_id_arg, ids))
        await self._connection.send_packed_command(command, check_health=False)
        self._is_blocked = block
        try:
            # A connection that died silently (no reset) must not hang the shard.
            async with asyncio.timeout(BLOCK_MS / 1000 + _REPLY_TIMEOUT_S):
                reply: list[Any] | None = await self._connection.read_response(timeout=math.inf)
        except TimeoutError as exc:
            raise OSError("XREAD reply overdue") from exc
        finally:
            self._is_blocked = self._has_wake_pending = False
        return reply

    def _dispatch(self, reply: list[Any]) -> None:
        round_ = self._round
        feeds = self.feeds
        for key, entries in reply:
            feed = feeds.get(key)
            if feed is None:
                if key == self.wake_key:
                    self._wake_id_arg = _bulk(entries[-1][0])
                continue
            if feed.activated_round >= round_:
                continue
            feed.move_to(entries[-1][0])
            is_backlogged = False
            for subscriber in feed.subscribers:
                # The common case inline (`take` does the rest): this loop runs for every entry.
                if subscriber.skip_upto is None:
                    queue = subscriber.entries
                    queue.extend(entries)
                    waiter = subscriber.waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(False)
                else:
                    subscriber.take(entries)
                    queue = subscriber.entries
                if len(queue) >= QUEUE_LIMIT:
                    is_backlogged = True
            if is_backlogged:
                self.deactivate(feed)

    async def _end_lost_streams(self) -> None:
        """After a reconnect: streams that existed and vanished (Redis restarted empty) end now."""
        started = [feed for feed in self.feeds.values() if feed.last_id != "0-0"]
        if not started:
            return
        connection = self._connection
        await connection.send_packed_command(
            connection.pack_commands([("EXISTS", feed.key) for feed in started]), check_health=False
        )
        for feed in started:
            exists = await connection.read_response(timeout=_REPLY_TIMEOUT_S)
            if exists is None:
                raise OSError("EXISTS reply overdue")
            if not exists:
                log.warning("stream_lost", shard=self.index)
                for subscriber in feed.subscribers:
                    subscriber.is_lost = True
                    subscriber.wake()
                self.remove(feed)

    async def aclose(self) -> None:
        for task in (self._task, self._wake_task):
            if task is not None:
                await cancel_and_wait(task)
        await self._connection.disconnect()
