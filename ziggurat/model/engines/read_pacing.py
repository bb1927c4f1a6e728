"""Paced reads of upstream token streams: after the first text, read each stream once per interval.

A remote server sends one SSE event per token. Read as it arrives, every token
costs the gateway a system call, a parser pass in aiohttp, a wake-up of the
reading task and a pass through the relay's generators, although the worker
then holds the text until its next flush anyway (`stream_flush_interval_s`,
`connection/streams/publisher.py`). Pacing moves that coalescing to the socket:
between ticks the stream's transport stops reading (the kernel buffers what
arrives), and at each tick it reads everything waiting in one go. The client sees
the same thing as before (the first token at once, then the answer in slices no
further apart than the flush interval) for about a third less gateway CPU per
streamed request (bench/gateway_overhead.py).

A stream's ticks come one interval apart, starting one interval after its first
text. They are rounded to one of `SLOTS` slots of the interval, and the streams
whose ticks share a slot share one timer: the reads (and the CPU they cost) stay
spread over the interval as the streams' starts were, instead of all landing on
one instant, and each slot's slices reach the publisher together, so it still
writes them in one batch.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress

SLOTS = 10
# What pausing a transport may raise: a transport without flow control, or one already closed.
_FLOW_CONTROL_ERRORS = (AttributeError, NotImplementedError, RuntimeError)


class ReadTicker:
    """Ticks are slot numbers: slot `n` starts at `n * interval_s / SLOTS` on the loop's clock."""

    __slots__ = ("_slot_s", "_timers")

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("a read ticker needs interval_s > 0")
        self._slot_s = interval_s / SLOTS
        self._timers: dict[int, tuple[asyncio.TimerHandle, list[asyncio.Future[None]]]] = {}

    def first_tick(self, now: float) -> int:
        """A stream's first tick: about one interval from `now`."""
        return math.floor(now / self._slot_s) + SLOTS

    def following(self, tick: int, now: float) -> int:
        """The tick one interval after `tick`; the next slot when that is past already (a stream behind)."""
        return max(tick + SLOTS, math.floor(now / self._slot_s) + 1)

    async def wait(self, tick: int) -> None:
        """Return at `tick`. A waiter cancelled meanwhile leaves the others undisturbed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = self._timers.get(tick)
        if timer is None:
            handle = loop.call_at(tick * self._slot_s, self._fire, tick)
            timer = self._timers[tick] = (handle, [])
        timer[1].append(waiter)
        await waiter

    def _fire(self, tick: int) -> None:
        _, waiters = self._timers.pop(tick)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def pause_until(ticker: ReadTicker, tick: int, transport: asyncio.ReadTransport | None) -> None:
    """Stop reading `transport` until `tick` (the kernel keeps what arrives meanwhile).

    Reading resumes however the wait ends, so a connection is never left paused: a
    cancelled wait closes it anyway, and a finished one reads on at once.
    """
    if transport is None:  # the whole body is in aiohttp's buffer already: nothing to pace
        return
    with suppress(*_FLOW_CONTROL_ERRORS):
        transport.pause_reading()
    try:
        await ticker.wait(tick)
    finally:
        with suppress(*_FLOW_CONTROL_ERRORS):
            transport.resume_reading()
