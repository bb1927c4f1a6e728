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
whose ticks share a slot share one timer, which resumes their transports: the
reads (and the CPU they cost) stay spread over the interval as the streams'
starts were, instead of all landing on one instant, and each slot's slices reach
the publisher together, so it still writes them in one batch.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress

import aiohttp

SLOTS = 10
# What pausing a transport may raise: a transport without flow control, or one already closed.
_FLOW_CONTROL_ERRORS = (AttributeError, NotImplementedError, RuntimeError)


class ReadTicker:
    """Ticks are slot numbers: slot `n` starts at `n * interval_s / SLOTS` on the loop's clock."""

    __slots__ = ("_paused", "_slot_s")

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("a read ticker needs interval_s > 0")
        self._slot_s = interval_s / SLOTS
        self._paused: dict[int, list[asyncio.ReadTransport]] = {}

    def first_tick(self, now: float) -> int:
        """A stream's first tick: about one interval from `now`."""
        return math.floor(now / self._slot_s) + SLOTS

    def following(self, tick: int, now: float) -> int:
        """The tick one interval after `tick`; the next slot when that is past already (a stream behind)."""
        return max(tick + SLOTS, math.floor(now / self._slot_s) + 1)

    def pause(self, transport: asyncio.ReadTransport, tick: int) -> None:
        """Stop reading `transport` until `tick` (the kernel keeps what arrives meanwhile).

        The slot's timer resumes it, so the stream's task, already waiting for its
        next read, wakes once per slice (when the data is in), not also at the tick.
        The caller closes a connection it stops reading while paused (a cancelled or
        timed-out read), so a paused transport is never handed to another request;
        resuming one that closed meanwhile is harmless.
        """
        try:
            transport.pause_reading()
        except _FLOW_CONTROL_ERRORS:
            return  # no flow control (or closed): it reads on, unpaced
        paused = self._paused.get(tick)
        if paused is None:
            paused = self._paused[tick] = []
            asyncio.get_running_loop().call_at(tick * self._slot_s, self._resume, tick)
        paused.append(transport)

    def _resume(self, tick: int) -> None:
        for transport in self._paused.pop(tick):
            with suppress(*_FLOW_CONTROL_ERRORS):
                transport.resume_reading()


def resume_upstream_once_per_read(content: aiohttp.StreamReader) -> None:
    """Have aiohttp resume the upstream's protocol once per paced read, not once per token.

    aiohttp's reader calls its protocol's `resume_reading` after every HTTP chunk it hands
    out while the buffer holds less than its low-water mark, and each call runs the parser
    on nothing; a paced slice is one chunk per token, so one read of it cost a token's worth
    of those calls per token (about 3% of the gateway's instructions per streamed request,
    callgrind). At one byte, the low-water mark is only crossed when a read empties the
    buffer: one resume per read, at which point the reader has taken every chunk there was.
    The high-water mark, where aiohttp pauses the protocol, is unchanged, so a burst larger
    than the buffer still pauses and resumes as before. The attribute is private: an aiohttp
    without it keeps its own behaviour.
    """
    with suppress(AttributeError):
        content._low_water = 1
