"""In-process event streams: the embedded default, with the same semantics as the Redis ones.

Each stream keeps at most `max_entries` entries (the oldest go first, like
`XADD MAXLEN`) and is forgotten `ttl_s` after its last write, so memory stays
bounded by the number of live jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from ziggurat.connection.streams.base import (
    NO_FIRST_EVENT,
    STALLED,
    Appendable,
    AppendStatus,
    Chunk,
    Claim,
    StreamEntry,
    cancelled_end,
    is_entry_id,
    timeout_end,
)
from ziggurat.lazy_deadline import LazyDeadline
from ziggurat.model.engine import GenerationEnd, TextDelta

_SWEEP_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Stream:
    entries: list[StreamEntry] = field(default_factory=list)
    first_seq: int = 1
    """Sequence number of `entries[0]` (earlier ones were trimmed)."""
    epoch: int = 0
    is_ended: bool = False
    is_cancelled: bool = False
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    """Readers waiting for the next write; each owns its future (a cancelled reader cancels only its own)."""
    touched_at: float = field(default_factory=time.monotonic)
    on_cancel: list[Callable[[], None]] | None = None
    """Callbacks of the worker running the job (`on_cancelled`); None until one watches."""

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.entries)

    def add(self, item: Appendable, max_entries: int) -> None:
        seq = self.next_seq
        if isinstance(item, Chunk):
            entry = StreamEntry(f"0-{seq}", TextDelta(item.text, item.logprobs), item.tokens)
        else:
            entry = StreamEntry(f"0-{seq}", item)
            self.is_ended = True
        self.entries.append(entry)
        if len(self.entries) > max_entries:
            drop = len(self.entries) - max_entries
            del self.entries[:drop]
            self.first_seq += drop
        self.touched_at = time.monotonic()
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)

    async def wait_for_write(self, idle: _IdleTimer, timeout_s: float) -> bool:
        """Wait for the next write; False when `timeout_s` passed first.

        A future per wait and the reader's one lazily re-armed timer, not `asyncio.timeout`
        around an `Event` (four `get_running_loop` calls, each a `getpid` system call on
        Python 3.11) nor a timer per wait: the reader of every in-process stream waits
        here once per worker flush.
        """
        waiter: asyncio.Future[bool] = idle.loop.create_future()
        self.waiters.append(waiter)
        idle.watch(waiter, timeout_s)
        return not await waiter


class _IdleTimer(LazyDeadline):
    """One timer for all of a reader's waits (`LazyDeadline`): a wait costs two attribute
    stores instead of pushing a timer onto the loop's heap and cancelling it."""

    __slots__ = ("waiter",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.waiter: asyncio.Future[bool] | None = None

    def watch(self, waiter: asyncio.Future[bool], timeout_s: float) -> None:
        """Resolve `waiter` with True (expired) if nothing resolved it within `timeout_s`."""
        self.waiter = waiter
        self.move_to(self.loop.time() + timeout_s)

    def _is_pending(self) -> bool:
        return self.waiter is not None and not self.waiter.done()

    def _expire(self) -> None:
        if self.waiter is not None:
            self.waiter.set_result(True)


class MemoryStreams:
    appends_cost_a_round_trip = False

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        first_event_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._first_event_timeout_s = first_event_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._streams: dict[str, _Stream] = {}
        self._swept_at = time.monotonic()

    def _stream(self, job_id: str) -> _Stream:
        self._sweep()
        stream = self._streams.get(job_id)
        if stream is None:
            stream = self._streams[job_id] = _Stream()
        return stream

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < _SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        expired = [job_id for job_id, s in self._streams.items() if now - s.touched_at > self._ttl_s]
        for job_id in expired:
            del self._streams[job_id]

    async def claim(self, job_id: str) -> Claim:
        stream = self._stream(job_id)
        if stream.is_ended:
            return Claim("finished")
        stream.epoch += 1
        stream.touched_at = time.monotonic()
        deltas = [e for e in stream.entries if isinstance(e.event, TextDelta)]
        text = "".join(e.event.text for e in deltas if isinstance(e.event, TextDelta))
        tokens = sum(e.tokens for e in deltas)
        if stream.is_cancelled:
            return Claim("cancelled", stream.epoch, text, tokens)
        return Claim("run", stream.epoch, text, tokens)

    async def append(self, batch: Mapping[str, tuple[int, Sequence[Appendable]]]) -> dict[str, AppendStatus]:
        statuses: dict[str, AppendStatus] = {}
        for job_id, (epoch, items) in batch.items():
            stream = self._streams.get(job_id)
            if stream is None:
                statuses[job_id] = AppendStatus.LOST
            elif stream.epoch != epoch:
                statuses[job_id] = AppendStatus.FENCED
            else:
                for item in items:
                    stream.add(item, self._max_entries)
                statuses[job_id] = AppendStatus.OK
        return statuses

    async def read(self, job_id: str, *, after: str | None = None) -> AsyncGenerator[StreamEntry, None]:
        stream = self._stream(job_id)
        idle = _IdleTimer(asyncio.get_running_loop())
        next_seq = int(after.split("-")[1]) + 1 if after is not None and is_entry_id(after) else 1
        has_seen_event = after is not None
        try:
            while True:
                start = max(next_seq - stream.first_seq, 0)
                pending = stream.entries[start:]
                for entry in pending:
                    yield entry
                    if isinstance(entry.event, GenerationEnd):
                        return
                if pending:
                    has_seen_event = True
                    next_seq = stream.first_seq + start + len(pending)
                if stream.next_seq > next_seq:  # written while this reader was suspended in `yield`
                    continue
                timeout = self._idle_timeout_s if has_seen_event else self._first_event_timeout_s
                if not await stream.wait_for_write(idle, timeout):
                    reason = STALLED if has_seen_event else NO_FIRST_EVENT
                    yield StreamEntry(f"0-{next_seq}", timeout_end(reason))
                    return
                # The stream may have expired and been replaced while we waited.
                stream = self._streams.get(job_id, stream)
        finally:
            idle.close()

    async def cancel(self, job_id: str) -> None:
        stream = self._stream(job_id)
        if stream.is_cancelled:
            return
        stream.is_cancelled = True
        callbacks, stream.on_cancel = stream.on_cancel, None
        for callback in callbacks or ():
            callback()
        if stream.epoch == 0 and not stream.is_ended:
            stream.add(cancelled_end(), self._max_entries)

    def on_cancelled(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        stream = self._stream(job_id)
        if stream.is_cancelled:
            handle = asyncio.get_running_loop().call_soon(callback)
            return handle.cancel
        if stream.on_cancel is None:
            stream.on_cancel = []
        callbacks = stream.on_cancel
        callbacks.append(callback)

        def unwatch() -> None:
            with suppress(ValueError):
                callbacks.remove(callback)

        return unwatch

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._streams.clear()
