"""The worker: joins a job queue and an event stream store to an engine.

It takes a job only when the engine has a free slot (pull-based load
balancing: the queue is the balancer), claims the job's stream, and streams
the engine's events into it through the coalescing publisher. A redelivered
job (its previous worker died) is claimed with the text already emitted, and
the engine continues after that text, so the reader sees one seamless answer.
A job that keeps failing goes to the dead-letter queue after
`max_deliveries` claims, and its readers get a clear error.

Cancellation (a client leaving, a stop button) reaches the generation within
one decode step through `EventStreams.wait_cancelled`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing, suppress

from ziggurat.connection.broker.base import Delivery, JobQueue
from ziggurat.connection.streams.base import AppendStatus, Claim, EventStreams
from ziggurat.connection.streams.publisher import JobWriter, StreamClosed, StreamPublisher
from ziggurat.errors import ZigguratError
from ziggurat.model.engine import Engine, GenerationEnd, GenerationRequest, Usage
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

GAVE_UP = "This answer could not be completed: the workers running it failed {count} times."
ENGINE_FAILED = "The model failed while generating this answer."


class Worker:
    """Runs up to `engine.capacity` jobs for one model at a time. Owns its tasks."""

    def __init__(
        self,
        *,
        jobs: JobQueue,
        streams: EventStreams,
        publisher: StreamPublisher,
        engine: Engine,
        model: str,
        max_deliveries: int = 3,
    ) -> None:
        self._jobs = jobs
        self._streams = streams
        self._publisher = publisher
        self._engine = engine
        self._model = model
        self._max_deliveries = max_deliveries
        self._slots = asyncio.Semaphore(engine.capacity)
        self._tasks: set[asyncio.Task[None]] = set()
        self.completed_count = 0
        self.cancelled_count = 0
        self.resumed_count = 0

    @property
    def active_jobs(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Pull and serve jobs until cancelled; jobs in flight are released for another worker."""
        await self._jobs.consume(self._model, prefetch=self._engine.capacity)
        try:
            while True:
                await self._slots.acquire()
                try:
                    delivery = await self._jobs.take(self._model)
                except BaseException:
                    self._slots.release()
                    raise
                task = asyncio.create_task(self._serve(delivery), name=f"job-{delivery.job.job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._job_finished)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _job_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("job_failed", error_type=type(task.exception()).__name__)

    async def _serve(self, delivery: Delivery) -> None:
        job_id = delivery.job.job_id
        try:
            claim = await self._streams.claim(job_id)
        except asyncio.CancelledError:
            await delivery.release()
            raise
        except Exception as exc:  # the stream store is down: another worker may do better later
            log.warning("claim_failed", job_id=job_id, error_type=type(exc).__name__)
            await delivery.release()
            return
        if claim.status == "finished":
            await delivery.ack()
            return
        writer = self._publisher.writer(job_id, claim.epoch)
        if claim.status == "cancelled":
            await writer.finish(GenerationEnd("cancelled", Usage(0, claim.tokens)))
            await delivery.ack()
            return
        if claim.epoch > self._max_deliveries:
            log.error("job_dead_lettered", job_id=job_id, deliveries=claim.epoch - 1)
            failure = GAVE_UP.format(count=claim.epoch - 1)
            await writer.finish(GenerationEnd("error", Usage(0, claim.tokens), failure))
            await delivery.dead_letter()
            return
        max_tokens = delivery.job.request.params.max_tokens
        if max_tokens is not None and claim.tokens >= max_tokens:
            await writer.finish(GenerationEnd("length", Usage(0, claim.tokens)))
            await delivery.ack()
            return
        if claim.epoch > 1:
            self.resumed_count += 1
            log.info("job_resumed", job_id=job_id, epoch=claim.epoch, chars_done=len(claim.text))
        try:
            await self._run(delivery, claim, writer)
        except asyncio.CancelledError:
            # This worker is stopping: the job goes back to the queue and another worker resumes it.
            await delivery.release()
            raise
        await delivery.ack()

    async def _run(self, delivery: Delivery, claim: Claim, writer: JobWriter) -> None:
        job_id = delivery.job.job_id
        generation = asyncio.create_task(self._relay(_resumed(delivery.job.request, claim), claim, writer))
        watcher = asyncio.create_task(self._streams.wait_cancelled(job_id))
        try:
            await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _settle(generation, watcher)
            raise
        if not generation.done():
            await _settle(generation)
            self.cancelled_count += 1
            log.info("job_cancelled", job_id=job_id)
            await writer.finish(GenerationEnd("cancelled", Usage(0, claim.tokens + writer.written_tokens)))
        await _settle(watcher)

    async def _relay(self, request: GenerationRequest, claim: Claim, writer: JobWriter) -> None:
        try:
            async with aclosing(self._engine.generate(request)) as events:
                ended: GenerationEnd | None = None
                async for event in events:
                    if isinstance(event, GenerationEnd):
                        ended = event  # engines end after this; reading on lets them finish cleanly
                    else:
                        await writer.write(event.text)
            end = (
                _with_earlier_tokens(ended, claim.tokens)
                if ended is not None
                else GenerationEnd("error", Usage(0, claim.tokens), ENGINE_FAILED)
            )
        except StreamClosed as closed:
            log.warning("job_stream_closed", job_id=request.request_id, status=closed.status.value)
            return
        except ZigguratError as exc:
            end = GenerationEnd("error", Usage(0, claim.tokens), exc.message)
        except Exception as exc:  # the worker boundary: an engine bug is an error event, not a hang
            log.exception("engine_failed", job_id=request.request_id, error_type=type(exc).__name__)
            end = GenerationEnd("error", Usage(0, claim.tokens), ENGINE_FAILED)
        if await writer.finish(end) is AppendStatus.OK and end.finish_reason != "error":
            self.completed_count += 1


async def _settle(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


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
