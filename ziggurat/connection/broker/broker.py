"""The gateway's view of the broker: submit jobs, read their streams, cancel them.

A `Broker` pairs a `JobQueue` (jobs out) with `EventStreams` (events back);
the embedded default pairs the in-process implementations, production pairs
RabbitMQ with Redis Streams. Workers use the two parts directly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from ziggurat.connection.broker.base import Job, JobQueue, Priority, PriorityDepths
from ziggurat.connection.streams.base import EventStreams, StreamEntry


@dataclass(slots=True, frozen=True)
class Broker:
    jobs: JobQueue
    streams: EventStreams

    async def submit(self, job: Job) -> None:
        """Enqueue `job`; `Overloaded` when its model's queue is full."""
        await self.jobs.submit(job)

    def read(self, job_id: str, *, after: str | None = None) -> AsyncGenerator[StreamEntry, None]:
        return self.streams.read(job_id, after=after)

    async def cancel(self, job_id: str) -> None:
        await self.streams.cancel(job_id)

    def queue_depth(self, model: str) -> int:
        return self.jobs.queue_depth(model)

    def queue_depth_by_priority(self, model: str) -> Mapping[Priority, int] | None:
        """Jobs waiting per priority class, where the queue can tell (None for RabbitMQ)."""
        if isinstance(self.jobs, PriorityDepths):
            return self.jobs.queue_depth_by_priority(model)
        return None

    async def aclose(self) -> None:
        await self.jobs.aclose()
        await self.streams.aclose()
