"""The worker: joins a job queue and an event stream store to an engine.

It takes a job only when the engine has a free slot (pull-based load
balancing: the queue is the balancer), claims the job's stream, and streams
the engine's events into it through the coalescing publisher. A redelivered
job (its previous worker died) is claimed with the text already emitted, and
the engine continues after that text, so the reader sees one seamless answer.
A job that keeps failing goes to the dead-letter queue after
`max_deliveries` claims, and its readers get a clear error.

Cancellation (a client leaving, a stop button) reaches the generation within
one decode step through `EventStreams.on_cancelled`. A stopping worker drains:
it stops taking jobs, lets those it runs finish within a grace period and
releases the rest to the queue, where another worker resumes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, Protocol

from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.broker.base import Delivery, Job, JobQueue, Priority
from ziggurat.connection.job_spans import describe_end, job_attributes, request_attributes
from ziggurat.connection.streams.base import AppendStatus, Claim, EventStreams
from ziggurat.connection.streams.publisher import JobWriter, StreamClosed, StreamPublisher
from ziggurat.errors import ZigguratError
from ziggurat.model.engine import (
    Engine,
    FinishReason,
    GenerationEnd,
    GenerationRequest,
    Usage,
    VaryingCapacity,
    capacity_now,
)
from ziggurat.telemetry import get_logger
from ziggurat.tracing.base import NO_TRACER, Tracer

log = get_logger(__name__)

GAVE_UP = "This answer could not be completed: the workers running it failed {count} times."
ENGINE_FAILED = "The model failed while generating this answer."

JobOutcome = Literal["completed", "error", "cancelled", "dead_lettered", "released", "superseded"]
"""How a worker was done with a job: `released` went back to the queue (worker stopping, stream
store down); `superseded` was taken over by another worker while this one still ran it."""

_OUTCOMES: dict[FinishReason, JobOutcome] = {
    "stop": "completed",
    "length": "completed",
    "error": "error",
    "cancelled": "cancelled",
}


class JobObserver(Protocol):
    """What a worker reports about its jobs, for metrics (`ziggurat.service.metrics.Metrics` is one)."""

    def job_claimed(self, model: str, priority: Priority, queue_wait_s: float | None) -> None:
        """A job's first claim; `queue_wait_s` is None when the job does not say when it was queued."""
        ...

    def job_settled(self, model: str, outcome: JobOutcome) -> None: ...


class _Unobserved:
    def job_claimed(self, model: str, priority: Priority, queue_wait_s: float | None) -> None:
        return None

    def job_settled(self, model: str, outcome: JobOutcome) -> None:
        return None


_UNOBSERVED = _Unobserved()


@dataclass(slots=True, frozen=True)
class WorkerTelemetry:
    """Where a worker reports: job metrics and trace spans (`job`, then `engine.generate`)."""

    observer: JobObserver = _UNOBSERVED
    tracer: Tracer = NO_TRACER


class Worker:
    """Runs up to `engine.capacity` jobs for one model at a time (or, for an engine with
    `VaryingCapacity`, up to its `available_capacity` of the moment). Owns its tasks."""

    def __init__(
        self,
        *,
        jobs: JobQueue,
        streams: EventStreams,
        publisher: StreamPublisher,
        engine: Engine,
        model: str,
        max_deliveries: int = 3,
        telemetry: WorkerTelemetry | None = None,
    ) -> None:
        telemetry = telemetry or WorkerTelemetry()
        self._observer = telemetry.observer
        self._tracer = telemetry.tracer
        self._jobs = jobs
        self._streams = streams
        self._publisher = publisher
        self._engine = engine
        self._model = model
        self._max_deliveries = max_deliveries
        self._varying = engine if isinstance(engine, VaryingCapacity) else None
        self._room = asyncio.Event()
        """Set when a job ends or the capacity changes: a full puller looks again."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._puller: asyncio.Task[None] | None = None
        self._is_draining = False
        self.completed_count = 0
        self.cancelled_count = 0
        self.resumed_count = 0

    @property
    def active_jobs(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Pull and serve jobs until drained (`drain`) or cancelled.

        Drained, it returns once the jobs in flight have ended; cancelled, it
        releases them at once for another worker, which resumes them.
        """
        if self._is_draining:
            return
        await self._jobs.consume(self._model, prefetch=self._engine.capacity)
        if self._is_draining:  # drained while the consumer was starting
            await self._jobs.stop_consuming(self._model)
            return
        puller = asyncio.create_task(self._pull(), name=f"pull-{self._model}")
        self._puller = puller
        watcher = asyncio.create_task(self._watch_capacity(), name=f"capacity-{self._model}")
        try:
            await asyncio.wait({puller})
            if not puller.cancelled():
                puller.result()  # a failure to take jobs ends the worker
            while self._tasks:  # drained: `drain` decides how long these may run
                await asyncio.wait(set(self._tasks))
        finally:
            await cancel_and_wait(puller, watcher, *self._tasks)

    def _has_room(self) -> bool:
        return len(self._tasks) < (capacity_now(self._engine) or 0)

    async def _wait_for_room(self) -> None:
        while not self._has_room():
            self._room.clear()
            await self._room.wait()

    async def _watch_capacity(self) -> None:
        if self._varying is None:
            return
        while True:
            await self._varying.capacity_changed()
            self._room.set()

    async def _pull(self) -> None:
        while True:
            await self._wait_for_room()
            delivery = await self._jobs.take(self._model)
            try:
                # The capacity may have fallen while this worker waited for a job: hold it until
                # there is room (it has not started; a draining worker gives it back).
                await self._wait_for_room()
            except BaseException:
                await delivery.release()
                raise
            task = asyncio.create_task(self._serve(delivery), name=f"job-{delivery.job.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._job_finished)

    async def drain(self, *, deadline: float) -> None:
        """Stop taking jobs, let those in flight run until `deadline` (`time.monotonic()`), release the rest.

        Jobs received but not started go back to the queue at once. A released
        job is resumed by another worker after the text already streamed, so
        its reader sees one answer. Safe to call more than once.
        """
        if not self._is_draining:
            self._is_draining = True
            log.info("worker_draining", model=self._model, active_jobs=len(self._tasks))
            if self._puller is not None:
                self._puller.cancel()
            await self._jobs.stop_consuming(self._model)
        running = set(self._tasks)
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        if unfinished:
            log.info("worker_releasing_jobs", model=self._model, count=len(unfinished))
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    def _job_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job_failed", error_type=type(task.exception()).__name__)

    async def _serve(self, delivery: Delivery) -> None:
        if not self._tracer.is_enabled:
            await self._serve_job(delivery)
            return
        job = delivery.job
        # The parent is the gateway's submit span (a new trace when the job carries none).
        with self._tracer.span(
            "job", kind="consumer", parent=job.trace_context, attributes=job_attributes(job)
        ):
            await self._serve_job(delivery)

    async def _serve_job(self, delivery: Delivery) -> None:
        job_id = delivery.job.job_id
        try:
            claim = await self._streams.claim(job_id)
        except asyncio.CancelledError:
            await self._release(delivery)
            raise
        except Exception as exc:  # the stream store is down: another worker may do better later
            log.warning("claim_failed", job_id=job_id, error_type=type(exc).__name__)
            await self._release(delivery)
            return
        if claim.epoch == 1:  # a later claim's wait would include the earlier workers' time
            self._observer.job_claimed(self._model, delivery.job.priority, _queue_wait_s(delivery.job))
        if claim.status == "finished":
            await delivery.ack()
            return
        writer = self._publisher.writer(job_id, claim.epoch)
        if claim.status == "cancelled":
            end = GenerationEnd("cancelled", Usage(0, claim.tokens))
            await self._end_without_running(delivery, writer, end, "cancelled")
            return
        if claim.epoch > self._max_deliveries:
            log.error("job_dead_lettered", job_id=job_id, deliveries=claim.epoch - 1)
            failure = GAVE_UP.format(count=claim.epoch - 1)
            end = GenerationEnd("error", Usage(0, claim.tokens), failure)
            await self._end_without_running(delivery, writer, end, "dead_lettered")
            return
        max_tokens = delivery.job.request.params.max_tokens
        if max_tokens is not None and claim.tokens >= max_tokens:
            end = GenerationEnd("length", Usage(0, claim.tokens))
            await self._end_without_running(delivery, writer, end, "completed")
            return
        if claim.epoch > 1:
            self.resumed_count += 1
            log.info("job_resumed", job_id=job_id, epoch=claim.epoch, chars_done=len(claim.text))
        try:
            await self._run(delivery, claim, writer)
        except asyncio.CancelledError:
            if writer.has_ended:
                # Stopped between writing the end and acking: the answer is whole, so the job
                # is done; handing it over would only make another worker find it finished.
                await asyncio.shield(delivery.ack())
            else:
                # This worker is stopping: the job goes back to the queue and another worker resumes it.
                await self._release(delivery)
            raise
        await delivery.ack()

    async def _release(self, delivery: Delivery) -> None:
        await delivery.release()
        self._observer.job_settled(self._model, "released")

    async def _end_without_running(
        self, delivery: Delivery, writer: JobWriter, end: GenerationEnd, outcome: JobOutcome
    ) -> None:
        """End a job's stream with `end` and settle it, without running the engine."""
        await writer.finish(end)
        if outcome == "dead_lettered":
            await delivery.dead_letter()
        else:
            await delivery.ack()
        self._observer.job_settled(self._model, outcome)

    async def _run(self, delivery: Delivery, claim: Claim, writer: JobWriter) -> None:
        """Generate in this task (not a task raced with `asyncio.wait`: one hop fewer per job);
        a stop request (the stream's cancel) interrupts it: the stream store calls back
        (`on_cancelled`), which in process costs no watcher task per job."""
        job_id = delivery.job.job_id
        task = asyncio.current_task()
        assert task is not None
        generating = True
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if generating and not stopped:
                stopped = True
                task.cancel()

        unwatch = self._streams.on_cancelled(job_id, stop)
        try:
            await self._generate(_resumed(delivery.job.request, claim), claim, writer)
        except asyncio.CancelledError:
            if not stopped or task.uncancel() > 0:
                raise
            generating = False
            self.cancelled_count += 1
            self._observer.job_settled(self._model, "cancelled")
            log.info("job_cancelled", job_id=job_id)
            await writer.finish(GenerationEnd("cancelled", Usage(0, claim.tokens + writer.written_tokens)))
        finally:
            generating = False
            unwatch()

    async def _generate(self, request: GenerationRequest, claim: Claim, writer: JobWriter) -> None:
        """Relay the engine's answer (inside the `engine.generate` span) and report how the job ended."""
        if self._tracer.is_enabled:
            with self._tracer.span("engine.generate", attributes=request_attributes(request)) as span:
                end = await self._relay(request, claim, writer)
                if end is not None:
                    describe_end(span, end)
        else:
            end = await self._relay(request, claim, writer)
        self._observer.job_settled(self._model, "superseded" if end is None else _OUTCOMES[end.finish_reason])

    async def _relay(
        self, request: GenerationRequest, claim: Claim, writer: JobWriter
    ) -> GenerationEnd | None:
        """The end written to the stream; None when the stream was closed to this worker."""
        try:
            async with aclosing(self._engine.generate(request)) as events:
                ended: GenerationEnd | None = None
                async for event in events:
                    if isinstance(event, GenerationEnd):
                        ended = event  # engines end after this; reading on lets them finish cleanly
                    elif writer.add(event.text, event.logprobs, event.tokens):
                        await writer.flush()
            end = (
                _with_earlier_tokens(ended, claim.tokens)
                if ended is not None
                else GenerationEnd("error", Usage(0, claim.tokens), ENGINE_FAILED)
            )
        except StreamClosed as closed:
            log.warning("job_stream_closed", job_id=request.request_id, status=closed.status.value)
            return None
        except ZigguratError as exc:
            end = GenerationEnd("error", Usage(0, claim.tokens), exc.message)
        except Exception as exc:  # the worker boundary: an engine bug is an error event, not a hang
            log.exception("engine_failed", job_id=request.request_id, error_type=type(exc).__name__)
            end = GenerationEnd("error", Usage(0, claim.tokens), ENGINE_FAILED)
        if await writer.finish(end) is AppendStatus.OK and end.finish_reason != "error":
            self.completed_count += 1
        return end


def _queue_wait_s(job: Job) -> float | None:
    """Wall-clock time since the gateway queued the job (clamped at 0 for clock skew between hosts)."""
    if job.enqueued_at <= 0:
        return None
    return max(0.0, time.time() - job.enqueued_at)


def _resumed(request: GenerationRequest, claim: Claim) -> GenerationRequest:
    """The request a taking-over worker runs: continue after the text already sent, within the budget."""
    if not claim.text:
        return request
    params = request.params
    if params.max_tokens is not None:
        params = dataclasses.replace(params, max_tokens=params.max_tokens - claim.tokens)
    return dataclasses.replace(request, continuation=claim.text, params=params)


def _with_earlier_tokens(end: GenerationEnd, earlier: int) -> GenerationEnd:
    if not earlier:
        return end
    usage = Usage(end.usage.prompt_tokens, end.usage.completion_tokens + earlier)
    return dataclasses.replace(end, usage=usage)
