"""Paced reads of upstream token streams: after the first text, read each stream once per tick.

A remote server sends one SSE event per token. Read as it arrives, every token
costs the gateway a system call, a parser pass in aiohttp, a wake-up of the
reading task and a pass through the relay's generators, although the worker
then holds the text until its next flush anyway (`stream_flush_interval_s`,
`connection/streams/publisher.py`). Pacing moves that coalescing to the socket:
between ticks the stream's transport stops reading (the kernel buffers what
arrives), and at each tick it reads everything waiting in one go. The client sees
the same thing as before (the first token at once, then the answer in slices
no further apart than the flush interval) for about 40% less CPU per token in
aiohttp (bench/gateway_overhead.py).

Ticks fall on multiples of the interval on the event loop's clock and are shared
by every paced stream of an engine: one timer per tick however many streams, and
the streams' slices reach the publisher together, so it still writes them in one
batch.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress

# What pausing a transport may raise: a transport without flow control, or one already closed.
_FLOW_CONTROL_ERRORS = (AttributeError, NotImplementedError, RuntimeError)


class ReadTicker:
    """Wakes every waiting stream at the next multiple of `interval_s` of the loop's clock."""

    __slots__ = ("_handle", "_waiters", "interval_s")

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("a read ticker needs interval_s > 0")
        self.interval_s = interval_s
        self._waiters: list[asyncio.Future[None]] = []
        self._handle: asyncio.TimerHandle | None = None

    async def next_tick(self) -> None:
        """Return at the next tick. A waiter cancelled meanwhile leaves the others undisturbed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if self._handle is None:
            tick = (math.floor(loop.time() / self.interval_s) + 1) * self.interval_s
            self._handle = loop.call_at(tick, self._fire)
        await waiter

    def _fire(self) -> None:
        self._handle = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def pause_until_tick(ticker: ReadTicker, transport: asyncio.ReadTransport | None) -> None:
    """Stop reading `transport` until the next tick (the kernel keeps what arrives meanwhile).

    Reading resumes however the wait ends, so a connection is never left paused: a
    cancelled wait closes it anyway, and a finished one reads on at once.
    """
    if transport is None:  # the whole body is in aiohttp's buffer already: nothing to pace
        return
    with suppress(*_FLOW_CONTROL_ERRORS):
        transport.pause_reading()
    try:
        await ticker.next_tick()
    finally:
        with suppress(*_FLOW_CONTROL_ERRORS):
            transport.resume_reading()
