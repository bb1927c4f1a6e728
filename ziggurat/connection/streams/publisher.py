"""Coalesced writes from a worker to its jobs' streams.

A token a write is the expensive way to stream: each write is a round trip
for the worker and a message for every reader. The publisher sends a job's
first chunk at once (time to first token is what users feel), then gathers
what each job produces over `flush_interval_s` and writes all of the worker's
jobs in one `append` call (one pipelined round trip). The end of a job is
written immediately, with whatever text was still waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.streams.base import Appendable, AppendStatus, Chunk, EventStreams
from ziggurat.model.engine import Engine, GenerationEnd, PacedReader, TokenLogprob
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


PACED_FLUSH_S = 0.005
"""The publisher's window behind an engine that coalesces itself, when each write is a round trip
(Redis): long enough to batch the slices its streams hand over at one tick into one write, short
enough to add no noticeable delay."""


def flush_interval_for(engine: Engine, configured_s: float, streams: EventStreams) -> float:
    """The window a worker's publisher gathers tokens over, given its engine and stream store.

    An engine that reads its upstream once per `configured_s` (`PacedReader`) has
    coalesced already: gathering again for as long would add that delay twice. Into
    an in-process store its slices are written as they come (a write there is a list
    append; a window would only cost a timer and a later loop pass per slot), into one
    across the network after `PACED_FLUSH_S`, so a slot's slices share one round trip.
    """
    if isinstance(engine, PacedReader) and engine.read_interval_s > 0:
        return min(configured_s, PACED_FLUSH_S) if streams.appends_cost_a_round_trip else 0.0
    return configured_s


class StreamClosed(Exception):
    """The job's stream refuses further writes (`status` says why): stop generating."""

    def __init__(self, status: AppendStatus) -> None:
        super().__init__(status.value)
        self.status = status


@dataclass(slots=True)
class JobWriter:
    """One job's side of the publisher. `write` buffers; `finish` flushes and ends the stream."""

    publisher: StreamPublisher
    job_id: str
    epoch: int
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    written_tokens: int = 0
    """Every delta this writer was given (the usage of a job cut short)."""
    has_written: bool = False
    status: AppendStatus = AppendStatus.OK
    logprobs: list[TokenLogprob] | None = None
    """Buffered token logprobs; stays None for the (usual) requests that did not ask for them."""
    has_ended: bool = False
    """The job's end is in its stream: the job is done, whatever happens to this worker next."""
    is_scheduled: bool = False
    """Waiting for the flusher: further deltas only join the buffer (no per-token scheduling)."""

    async def write(self, text: str, logprobs: tuple[TokenLogprob, ...] | None = None) -> None:
        """Buffer one engine delta; its `logprobs`, when the request asked for them, travel with it."""
        if self.add(text, logprobs):
            await self.flush()

    def add(self, text: str, logprobs: tuple[TokenLogprob, ...] | None = None, tokens: int = 1) -> bool:
        """`write` without the await: True when the caller must `await flush()` now.

        Only the first delta (and every delta when coalescing is off) is written at once;
        the rest wait for the flusher. The worker calls this per delta, which spares a
        coroutine per delta.
        """
        if self.status is not AppendStatus.OK:
            raise StreamClosed(self.status)
        self.parts.append(text)
        if logprobs is not None:
            # Only requests that asked for logprobs pay for this list (see `take_chunk`).
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(logprobs)
        self.tokens += tokens
        self.written_tokens += tokens
        if not self.has_written or self.publisher.flush_interval_s <= 0:
            self.has_written = True
            return True
        if not self.is_scheduled:
            self.is_scheduled = True
            self.publisher.schedule(self)
        return False

    async def flush(self) -> None:
        """Write what is buffered now."""
        await self.publisher.write_now(self, [])

    async def finish(self, end: GenerationEnd) -> AppendStatus:
        if self.status is AppendStatus.OK:
            await self.publisher.write_now(self, [end])
            self.has_ended = self.status is AppendStatus.OK
        return self.status

    def take_chunk(self) -> Chunk | None:
        """The buffered deltas merged into one chunk: texts joined, logprobs concatenated in order."""
        if not self.parts:
            return None
        logprobs = self.logprobs
        chunk = Chunk("".join(self.parts), self.tokens, tuple(logprobs) if logprobs is not None else None)
        self.parts.clear()
        self.tokens = 0
        if logprobs is not None:
            logprobs.clear()
        return chunk


class StreamPublisher:
    """Owns one flusher task; `aclose()` writes what is still buffered."""

    def __init__(self, streams: EventStreams, *, flush_interval_s: float) -> None:
        self._streams = streams
        self.flush_interval_s = flush_interval_s
        self._waiting: dict[str, JobWriter] = {}
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def writer(self, job_id: str, epoch: int) -> JobWriter:
        return JobWriter(self, job_id, epoch)

    def schedule(self, writer: JobWriter) -> None:
        self._waiting[writer.job_id] = writer
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="stream-flusher")
        self._wakeup.set()

    async def write_now(self, writer: JobWriter, tail: list[Appendable]) -> None:
        """Write the writer's buffered text and `tail` now, in one call."""
        self._waiting.pop(writer.job_id, None)
        await self._write([writer], {writer.job_id: tail})

    async def _write(self, writers: list[JobWriter], tails: dict[str, list[Appendable]]) -> None:
        batch: dict[str, tuple[int, list[Appendable]]] = {}
        for writer in writers:
            writer.is_scheduled = False  # what it buffers from here on needs the next flush
            chunk = writer.take_chunk()
            items: list[Appendable] = [chunk] if chunk is not None else []
            items.extend(tails.get(writer.job_id, ()))
            if items:
                batch[writer.job_id] = (writer.epoch, items)
        if not batch:
            return
        try:
            statuses = await self._streams.append(batch)
        except Exception as exc:  # the store is unreachable: these jobs cannot stream any more
            log.warning("stream_write_failed", error_type=type(exc).__name__, jobs=len(batch))
            statuses = dict.fromkeys(batch, AppendStatus.LOST)
        for writer in writers:
            status = statuses.get(writer.job_id, AppendStatus.OK)
            if status is not AppendStatus.OK:
                writer.status = status

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self.flush_interval_s)
            writers = list(self._waiting.values())
            self._waiting.clear()
            await self._write(writers, {})

    async def aclose(self) -> None:
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
        writers = list(self._waiting.values())
        self._waiting.clear()
        await self._write(writers, {})
