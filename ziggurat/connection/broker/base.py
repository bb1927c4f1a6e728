"""The `JobQueue` interface: jobs go to workers by priority; a worker takes one only with a free slot.

Jobs travel one way, gateway → worker. Events come back through a separate
transport (`ziggurat.connection.streams`), because a job queue with publisher
confirms is the right tool for dispatching work and the wrong one for tens of
thousands of small token messages a second.

A `Delivery` is a job handed to one worker. The worker acks it once the job's
final event is written; a worker that dies before acking has the job
redelivered to another worker (RabbitMQ does this when the channel closes),
which resumes from what the event stream already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

from ziggurat.model.engine import GenerationRequest


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
    """`time.monotonic()` on the submitting gateway (for its own latency metrics only)."""
    enqueued_at: float = 0.0
    """`time.time()` when the job was queued (0: unknown): a worker measures the queue wait from it."""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """W3C trace context (`traceparent`, `tracestate`) of the submitting span; empty without tracing."""
    queue: str = ""
    """The model queue to use when it is not `request.model`: a LoRA adapter's jobs (`base:adapter`)
    go to the workers of its base model. Set by the gateway at each enqueue; not serialised."""

    @property
    def queue_name(self) -> str:
        return self.queue or self.request.model


class Delivery(Protocol):
    """One job handed to one worker."""

    @property
    def job(self) -> Job: ...

    async def ack(self) -> None:
        """The job is done (its final event is written). Idempotent; a lost connection's error is ignored."""
        ...

    async def release(self) -> None:
        """Give the job back to the queue for another worker (this worker is shutting down)."""
        ...

    async def dead_letter(self) -> None:
        """Give up on the job: it goes to the dead-letter queue, never to another worker."""
        ...


@runtime_checkable
class PriorityDepths(Protocol):
    """An optional queue capability: how many jobs wait in each priority class.

    The in-process queue knows; RabbitMQ reports only a queue's total (`queue_depth`).
    """

    def queue_depth_by_priority(self, model: str) -> Mapping[Priority, int]: ...


class JobQueue(Protocol):
    """Moves jobs to workers. Safe across tasks."""

    async def submit(self, job: Job) -> None:
        """Enqueue a job durably. Raises `Overloaded` when the model's queue is full."""
        ...

    async def consume(self, model: str, *, prefetch: int) -> None:
        """Start receiving jobs for `model` (worker side), at most `prefetch` unacked at a time.

        `prefetch` is the engine's capacity: jobs beyond it stay in the shared
        queue for other workers instead of waiting behind this one.
        """
        ...

    async def take(self, model: str) -> Delivery:
        """Wait for the next job for `model`, highest priority first (worker side).

        Call it only with a free engine slot: a worker holds at most as many
        deliveries as it has slots, so the queue is the load balancer.
        """
        ...

    async def stop_consuming(self, model: str) -> None:
        """Stop receiving jobs for `model` (a draining worker); jobs received but not taken go back.

        Deliveries already taken stay this worker's to ack or release. Without
        this, a draining worker would keep being sent jobs it will not start
        (each finished job frees prefetch room) until its connection closes.
        Idempotent, and harmless before `consume`.
        """
        ...

    def queue_depth(self, model: str) -> int:
        """Jobs waiting for `model` (a recent reading for remote queues)."""
        ...

    async def ping(self) -> bool:
        """Whether the queue is reachable (readiness)."""
        ...

    async def aclose(self) -> None: ...
