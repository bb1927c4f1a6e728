"""In-process job queue: an asyncio priority queue per model.

The embedded default: zero setup, one process. Queues are bounded
(`max_queue_depth` jobs per model) so overload turns into an `Overloaded`
error, never unbounded memory. A released job goes back to the front of its
priority; a dead-lettered one is kept (bounded) for inspection in tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Mapping

from ziggurat.connection.broker.base import Delivery, Job, Priority
from ziggurat.errors import Overloaded

_DEAD_LETTERS_KEPT = 100


class _MemoryDelivery:
    def __init__(self, queue: MemoryJobQueue, job: Job) -> None:
        self._queue = queue
        self._job = job
        self._is_settled = False

    @property
    def job(self) -> Job:
        return self._job

    async def ack(self) -> None:
        self._is_settled = True

    async def release(self) -> None:
        if not self._is_settled:
            self._is_settled = True
            self._queue.requeue(self._job)

    async def dead_letter(self) -> None:
        if not self._is_settled:
            self._is_settled = True
            self._queue.dead_letters.append(self._job)


class MemoryJobQueue:
    def __init__(self, *, max_queue_depth: int) -> None:
        self._max_queue_depth = max_queue_depth
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._waiting: dict[str, Counter[Priority]] = {}
        self._sequence = itertools.count()
        self.dead_letters: deque[Job] = deque(maxlen=_DEAD_LETTERS_KEPT)

    def _queue(self, model: str) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = asyncio.PriorityQueue()
        return queue

    async def submit(self, job: Job) -> None:
        queue = self._queue(job.queue_name)
        if queue.qsize() >= self._max_queue_depth:
            raise Overloaded(
                f"The queue for model '{job.queue_name}' is full; try again shortly.", retry_after_s=2
            )
        # Negated priority: PriorityQueue pops the smallest, we serve the highest;
        # the sequence number keeps FIFO order within a priority.
        queue.put_nowait((-int(job.priority), next(self._sequence), job))
        self._count(job, 1)

    def requeue(self, job: Job) -> None:
        """Back to the head of its priority class (a released job already waited its turn)."""
        self._queue(job.queue_name).put_nowait((-int(job.priority), -next(self._sequence), job))
        self._count(job, 1)

    def _count(self, job: Job, change: int) -> None:
        self._waiting.setdefault(job.queue_name, Counter())[job.priority] += change

    async def consume(self, model: str, *, prefetch: int) -> None:
        self._queue(model)

    async def stop_consuming(self, model: str) -> None:
        """Nothing to give back: a job leaves this queue only when `take` returns it."""

    async def take(self, model: str) -> Delivery:
        _, _, job = await self._queue(model).get()
        self._count(job, -1)
        return _MemoryDelivery(self, job)

    def queue_depth(self, model: str) -> int:
        queue = self._queues.get(model)
        return 0 if queue is None else queue.qsize()

    def queue_depth_by_priority(self, model: str) -> Mapping[Priority, int]:
        waiting = self._waiting.get(model, Counter())
        return {priority: waiting[priority] for priority in Priority}

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._queues.clear()
        self._waiting.clear()
