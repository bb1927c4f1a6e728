"""One socket's outgoing frames: a bounded queue that the socket's single writer task drains.

A client that reads slowly must cost the server a bounded amount of memory,
while the replies it follows go on streaming (they are generated and stored
whatever the client does). So nothing waits on the client except the writer:

- Deltas coalesce. A delta whose stream already has one waiting in the queue
  is appended to it (text joined, latest entry id kept) instead of becoming
  another frame. A client that keeps up gets one frame per delta; a slow one
  gets fewer, bigger frames with the same text, and resuming after the entry id
  of the last frame it got still gives exactly the rest.
- A stream's waiting text is capped: past `max_pending_chars`, `add_delta`
  refuses and the caller ends that stream (`slow_consumer`); the client resumes
  it later from the last entry id it received.
- Control frames (`message`, `done`, `error`) are never merged or dropped.
  Those of streams are bounded by the number of streams (one `message` and one
  end each); those that answer the client's own frames (`pong`, errors) are
  bounded by `max_frames`: the reader calls `wait_for_room()` before it reads
  the next client frame, which pushes back on the client through TCP (and a
  client held back like this for three heartbeats is closed as dead).
- Heartbeat pings are only queued on an idle socket: a busy one needs none.

Worst case per socket: `max_frames` small frames, plus per stream one
`message`, one `done` (a stored message, like a REST response) and
`max_pending_chars` of text plus the one chunk that crossed the cap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ziggurat.connection.http.ws_protocol import Frame, delta_frame, encode


@dataclass(slots=True, eq=False)
class _WaitingDelta:
    stream: int
    stream_id: str
    parts: list[str]
    entry_id: str
    chars: int


class Outbox:
    """FIFO of encoded frames for one writer, with per-stream delta coalescing (see the module docstring).

    `stream` arguments are keys unique to one stream for the socket's life, so a
    client reusing a finished stream's `id` never merges into the old stream's text.
    """

    def __init__(self, *, max_frames: int, max_pending_chars: int) -> None:
        self._items: deque[str | _WaitingDelta] = deque()
        self._waiting: dict[int, _WaitingDelta] = {}
        self._max_frames = max_frames
        self._max_pending_chars = max_pending_chars
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._is_sending = False
        self.frames_sent = 0
        self.deltas_coalesced = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def is_flushed(self) -> bool:
        """Every frame queued so far has been sent."""
        return not self._items and not self._is_sending

    def put(self, frame: Frame, *, stream: int | None = None) -> None:
        """Queue a control frame. It seals `stream`'s waiting delta, so later text goes after it."""
        if stream is not None:
            self._waiting.pop(stream, None)
        self._append(encode(frame))

    def put_encoded(self, frame: str) -> None:
        self._append(frame)

    def add_delta(self, stream: int, stream_id: str, text: str, entry_id: str) -> bool:
        """Queue a piece of a stream's reply; False when its waiting text would pass the cap."""
        waiting = self._waiting.get(stream)
        if waiting is None:
            # A first piece is always taken: its size is what one upstream chunk holds.
            waiting = _WaitingDelta(stream, stream_id, [text], entry_id, len(text))
            self._waiting[stream] = waiting
            self._append(waiting)
            return True
        if waiting.chars + len(text) > self._max_pending_chars:
            return False
        waiting.parts.append(text)
        waiting.entry_id = entry_id
        waiting.chars += len(text)
        self.deltas_coalesced += 1
        return True

    def offer_ping(self, frame: str) -> None:
        """Queue a heartbeat only when nothing else is waiting to be sent."""
        if not self._items:
            self._append(frame)

    async def wait_for_room(self) -> None:
        while len(self._items) >= self._max_frames:
            self._has_room.clear()
            await self._has_room.wait()

    async def take(self) -> str:
        """The next frame to send, encoded; waits for one."""
        while not self._items:
            self._has_items.clear()
            await self._has_items.wait()
        item = self._items.popleft()
        if len(self._items) < self._max_frames:
            self._has_room.set()
        if isinstance(item, str):
            return item
        if self._waiting.get(item.stream) is item:
            del self._waiting[item.stream]
        return encode(delta_frame(item.stream_id, "".join(item.parts), item.entry_id))

    async def drain(self, send: Callable[[str], Awaitable[None]]) -> None:
        """The socket's writer: send frames in order until `send` raises (the client left)."""
        while True:
            frame = await self.take()
            self._is_sending = True
            try:
                await send(frame)
            finally:
                self._is_sending = False
            self.frames_sent += 1

    def _append(self, item: str | _WaitingDelta) -> None:
        self._items.append(item)
        self._has_items.set()
