"""In-process broker: an asyncio priority queue per model, a bounded event queue per job.

The embedded default: zero setup, one process. Queues are bounded (`max_queue_depth`
jobs per model, `stream_buffer_events` events per job) so overload turns into an
`Overloaded` error or back-pressure on the engine, never unbounded memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from contextlib import suppress
from dataclasses import dataclass, field

from ziggurat.connection.broker.base import Job
from ziggurat.errors import Overloaded
from ziggurat.model.engine import GenerationEnd, GenerationEvent, Usage

# Token counts are unknown once a job is dropped; the reader keeps whatever text it received.
_CANCELLED = GenerationEnd(finish_reason="cancelled", usage=Usage(prompt_tokens=0, completion_tokens=0))


@dataclass(slots=True)
class _JobState:
    events: asyncio.Queue[GenerationEvent]
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBroker:
    """Priority job queues and per-job event queues inside one event loop."""

    def __init__(self, *, max_queue_depth: int, stream_buffer_events: int) -> None:
        self._max_queue_depth = max_queue_depth
        self._stream_buffer_events = stream_buffer_events
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._jobs: dict[str, _JobState] = {}
        self._sequence = itertools.count()

    def _queue(self, model: str) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = asyncio.PriorityQueue(maxsize=self._max_queue_depth)
        return queue

    async def submit(self, job: Job) -> None:
        queue = self._queue(job.request.model)
        state = _JobState(events=asyncio.Queue(maxsize=self._stream_buffer_events))
        self._jobs[job.job_id] = state
        try:
            # Negated priority: PriorityQueue pops the smallest, we serve the highest;
            # the sequence number keeps FIFO order within a priority.
            queue.put_nowait((-int(job.priority), next(self._sequence), job))
        except asyncio.QueueFull:
            del self._jobs[job.job_id]
            raise Overloaded(
                f"The queue for model '{job.request.model}' is full; try again shortly.", retry_after_s=2
            ) from None

    async def events(self, job_id: str) -> AsyncGenerator[GenerationEvent, None]:
        state = self._jobs.get(job_id)
        if state is None:
            return
        is_finished = False
        try:
            while True:
                if state.cancelled.is_set() and state.events.empty():
                    # Cancelled by `cancel` (perhaps from another request): end like an engine would.
                    is_finished = True
                    yield _CANCELLED
                    return
                event = await state.events.get()
                yield event
                if isinstance(event, GenerationEnd):
                    is_finished = True
                    return
        finally:
            if not is_finished:
                state.cancelled.set()
            self._jobs.pop(job_id, None)

    async def cancel(self, job_id: str) -> None:
        """Drop the job; its event stream ends with a `cancelled` end after the events already sent."""
        state = self._jobs.get(job_id)
        if state is not None and not state.cancelled.is_set():
            state.cancelled.set()
            # Wakes a reader waiting for the next event. A full buffer needs no wake-up:
            # the reader finds the job cancelled once it has drained the buffer.
            with suppress(asyncio.QueueFull):
                state.events.put_nowait(_CANCELLED)

    async def take(self, model: str) -> Job:
        queue = self._queue(model)
        while True:
            _, _, job = await queue.get()
            state = self._jobs.get(job.job_id)
            # A job whose client already left is dropped here rather than run.
            if state is not None and not state.cancelled.is_set():
                return job

    async def publish(self, job_id: str, event: GenerationEvent) -> None:
        state = self._jobs.get(job_id)
        if state is None or state.cancelled.is_set():
            return
        await state.events.put(event)

    async def wait_cancelled(self, job_id: str) -> None:
        state = self._jobs.get(job_id)
        if state is None:
            return
        await state.cancelled.wait()

    def queue_depth(self, model: str) -> int:
        queue = self._queues.get(model)
        return 0 if queue is None else queue.qsize()

    async def aclose(self) -> None:
        for state in self._jobs.values():
            state.cancelled.set()
        self._jobs.clear()
