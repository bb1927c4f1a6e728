"""The worker: joins a broker to an engine.

It takes a job only when the engine has a free slot (pull-based load balancing:
the queue is the balancer), streams the engine's events back through the broker,
and cancels the generation as soon as the broker says the job was cancelled, so a
client disconnect frees the engine slot within one decode step.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing, suppress

from ziggurat.connection.broker.base import Broker, Job
from ziggurat.errors import ZigguratError
from ziggurat.model.engine import Engine, GenerationEnd, Usage
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


class Worker:
    """Runs up to `engine.capacity` jobs for one model at a time. Owns its tasks."""

    def __init__(self, *, broker: Broker, engine: Engine, model: str) -> None:
        self._broker = broker
        self._engine = engine
        self._model = model
        self._slots = asyncio.Semaphore(engine.capacity)
        self._jobs: set[asyncio.Task[None]] = set()
        self.completed_count = 0
        self.cancelled_count = 0

    @property
    def active_jobs(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Pull and serve jobs until cancelled; in-flight jobs are cancelled with it."""
        try:
            while True:
                await self._slots.acquire()
                try:
                    job = await self._broker.take(self._model)
                except BaseException:
                    self._slots.release()
                    raise
                task = asyncio.create_task(self._serve(job), name=f"job-{job.job_id}")
                self._jobs.add(task)
                task.add_done_callback(self._job_finished)
        finally:
            for task in self._jobs:
                task.cancel()
            if self._jobs:
                await asyncio.gather(*self._jobs, return_exceptions=True)

    def _job_finished(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("job_failed", error_type=type(task.exception()).__name__)

    async def _serve(self, job: Job) -> None:
        generation = asyncio.create_task(self._relay(job))
        watcher = asyncio.create_task(self._broker.wait_cancelled(job.job_id))
        try:
            await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not generation.done():
                generation.cancel()
                self.cancelled_count += 1
                log.info("job_cancelled", job_id=job.job_id)
            with suppress(asyncio.CancelledError):
                await watcher
            with suppress(asyncio.CancelledError):
                await generation

    async def _relay(self, job: Job) -> None:
        try:
            async with aclosing(self._engine.generate(job.request)) as events:
                async for event in events:
                    await self._broker.publish(job.job_id, event)
            self.completed_count += 1
        except ZigguratError as exc:
            await self._publish_failure(job, exc.message)
        except (
            Exception
        ) as exc:  # the worker boundary: any engine bug becomes an error event, never a hung client
            log.exception("engine_failed", job_id=job.job_id, error_type=type(exc).__name__)
            await self._publish_failure(job, "The model failed while generating this answer.")

    async def _publish_failure(self, job: Job, message: str) -> None:
        end = GenerationEnd(finish_reason="error", usage=Usage(0, 0), error=message)
        await self._broker.publish(job.job_id, end)
