"""The gateway side of Redis event streams: any number of local readers on a few shards.

`StreamReader.read` is the `EventStreams.read` of `RedisStreams`. Each stream
is read by one `Feed` in one `Shard` (a connection running one XREAD for up to
`MAX_FEEDS_PER_SHARD` streams), however many local readers follow it; a reader
that starts behind or ahead of the feed's position is reconciled by entry id.
Timeouts are swept by one task (every eighth of the shortest timeout, at most
0.25 s) instead of a timer per wait, because a wait happens for nearly every entry.

This module knows nothing of claims, epochs or cancellation (see `redis.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.streams.base import (
    NO_FIRST_EVENT,
    STALLED,
    STREAM_LOST,
    Chunk,
    StreamEntry,
    is_entry_id,
    timeout_end,
)
from ziggurat.connection.streams.codec import decode, encode
from ziggurat.connection.streams.redis_shard import Feed, Shard, Subscriber, id_key
from ziggurat.model.engine import GenerationEnd, TextDelta

MAX_FEEDS_PER_SHARD = 1000
_MAX_SWEEP_TICK_S = 0.25

_TEXT, _COUNT = encode(Chunk("", 0))
"""The field names of a text chunk, in the order the codec writes them."""


class StreamReader:
    """Reads Redis streams for any number of local readers over a few shared connections.

    `connect(name)` makes a new dedicated connection that decodes replies as
    `str` and speaks RESP2; `client` sends the occasional wake-up XADD.
    """

    def __init__(
        self,
        client: Redis,
        *,
        connect: Callable[[str], AbstractConnection],
        wake_key_prefix: str,
        first_event_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self.client = client
        self.connect = connect
        self.wake_key_prefix = wake_key_prefix
        self._first_event_timeout_s = first_event_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._shards: list[Shard] = []
        self._subscribers: set[Subscriber] = set()
        shortest_s = min(first_event_timeout_s, idle_timeout_s)
        self._sweep_tick_s = min(_MAX_SWEEP_TICK_S, max(0.005, shortest_s / 8))
        self._sweeper: asyncio.Task[None] | None = None
        self._is_closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _feed(self, key: str) -> Feed | None:
        for shard in self._shards:
            feed = shard.feeds.get(key)
            if feed is not None:
                return feed
        return None

    def _subscribe(self, key: str, after: str) -> Subscriber:
        feed = self._feed(key)
        if feed is None:
            shard = next((s for s in self._shards if len(s.feeds) < MAX_FEEDS_PER_SHARD), None)
            if shard is None:
                index = len(self._shards)
                connection = self.connect(f"{self.wake_key_prefix}:reader:{index}")
                shard = Shard(
                    self.client, connection, wake_key=f"{self.wake_key_prefix}:{index}", index=index
                )
                self._shards.append(shard)
            feed = shard.add(key, after)
            subscriber = Subscriber(feed)
        else:
            subscriber = Subscriber(feed)
            wanted, current = id_key(after), id_key(feed.last_id)
            if wanted < current:
                for other in feed.subscribers:
                    other.skip_upto = max(other.skip_upto or current, current)
                feed.shard.rewind(feed, after)
            elif wanted > current:
                subscriber.skip_upto = wanted
        feed.subscribers.append(subscriber)
        self._subscribers.add(subscriber)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="stream-reader-timeouts")
        return subscriber

    def _unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        feed = subscriber.feed
        if feed.is_removed:
            return
        feed.subscribers.remove(subscriber)
        if not feed.subscribers:
            feed.shard.remove(feed)
        else:
            self._resume_if_drained(feed)

    def _resume_if_drained(self, feed: Feed) -> None:
        if feed.slot < 0 and not feed.is_removed and not feed.is_backlogged():
            feed.shard.activate(feed)

    async def read(self, key: str, after: str | None) -> AsyncGenerator[StreamEntry, None]:
        """The entries of stream `key` after `after`, ending after the end entry or a timeout."""
        start = after if after is not None and is_entry_id(after) else "0-0"
        if self._is_closed:
            yield StreamEntry(start, timeout_end(STREAM_LOST))
            return
        subscriber = self._subscribe(key, start)
        last_id = start
        has_seen_event = after is not None
        loop = asyncio.get_running_loop()
        entries = subscriber.entries
        feed = subscriber.feed
        try:
            while True:
                while entries:
                    entry_id, fields = entries.popleft()
                    if len(fields) == 4 and fields[0] == _TEXT and fields[2] == _COUNT:
                        # `decode` for the one shape nearly every entry has, without its dict.
                        entry = StreamEntry(entry_id, TextDelta(fields[1]), int(fields[3]))
                    else:
                        entry = decode(entry_id, dict(zip(fields[::2], fields[1::2], strict=True)))
                    last_id = entry_id
                    has_seen_event = True
                    yield entry
                    if isinstance(entry.event, GenerationEnd):
                        return
                if subscriber.is_lost:
                    yield StreamEntry(last_id, timeout_end(STREAM_LOST))
                    return
                if feed.slot < 0:
                    self._resume_if_drained(feed)
                timeout_s = self._idle_timeout_s if has_seen_event else self._first_event_timeout_s
                subscriber.deadline = loop.time() + timeout_s
                waiter = subscriber.waiter = loop.create_future()
                if await waiter and not entries and not subscriber.is_lost:
                    yield StreamEntry(last_id, timeout_end(STALLED if has_seen_event else NO_FIRST_EVENT))
                    return
        finally:
            self._unsubscribe(subscriber)

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_tick_s)
            now = loop.time()
            for subscriber in self._subscribers:
                if now >= subscriber.deadline:
                    subscriber.wake(is_timeout=True)

    async def aclose(self) -> None:
        """Stop reading; readers waiting now, or starting later, end with `STREAM_LOST` rather than hang."""
        self._is_closed = True
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
        for shard in self._shards:
            await shard.aclose()
        for subscriber in self._subscribers:
            subscriber.is_lost = True
            subscriber.wake()
