"""The `Broker` interface: jobs go to workers by priority, events come back per job.

The gateway side submits a job and reads its event stream; the worker side takes
the next job for a model (only when its engine has a free slot: the queue is the
load balancer), publishes events, and watches for cancellation. Production
brokers (RabbitMQ jobs, Redis Streams back) implement the same contract.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from ziggurat.model.engine import GenerationEvent, GenerationRequest


class Priority(IntEnum):
    """Higher is served first (the AMQP convention, so it maps onto `x-max-priority`)."""

    BACKGROUND = 1
    API = 5
    INTERACTIVE = 9


@dataclass(slots=True, frozen=True)
class Job:
    job_id: str
    request: GenerationRequest
    priority: Priority = Priority.API
    submitted_at: float = 0.0


class Broker(Protocol):
    """Moves jobs to workers and their events back. Safe across tasks."""

    async def submit(self, job: Job) -> None:
        """Enqueue a job. Raises `Overloaded` when the model's queue is full."""
        ...

    def events(self, job_id: str) -> AsyncGenerator[GenerationEvent, None]:
        """The job's events, ending after its `GenerationEnd`. Call once per job."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Ask the worker holding the job (or the queue) to drop it. Idempotent."""
        ...

    async def take(self, model: str) -> Job:
        """Wait for the next job for `model`, highest priority first (worker side)."""
        ...

    async def publish(self, job_id: str, event: GenerationEvent) -> None:
        """Send one event back to the job's submitter (worker side)."""
        ...

    async def wait_cancelled(self, job_id: str) -> None:
        """Return once the job is cancelled (worker side)."""
        ...

    def queue_depth(self, model: str) -> int: ...

    async def aclose(self) -> None: ...
