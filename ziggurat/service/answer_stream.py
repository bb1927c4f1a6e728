"""A submitted generation as its readers see it: `GenerationStream` reads one job's stream.

Split from `generation.py` (the service that admits and submits): this is the
reading side, with the latency metrics of the reader that submitted the job,
the response-cache write of a finished cacheable answer, and the cancel of a
job whose API client hung up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from ziggurat.connection.broker.base import Job
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.cache.response import CachedAnswer
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.model.engine import (
    GenerationEnd,
    GenerationEvent,
    TextDelta,
)
from ziggurat.service.answer_reading import ReadsAnswer
from ziggurat.service.lifecycle import Draining
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

CacheStore = Callable[[str, GenerationEnd], Awaitable[None]]

_REQUEST_STATUS = {"stop": "ok", "length": "ok", "error": "error", "cancelled": "cancelled"}
"""`ziggurat_requests_total` status by finish reason (`rejected`: refused before it was queued)."""


class AnswerStream(Protocol):
    """What `submit` and `attach` return: a `GenerationStream`, or a `FallbackStream` when a request
    may be retried or fall back to another model (routing). Iterate `entries()` or `events()` once."""

    @property
    def job(self) -> Job:
        """The request's job (with fallbacks, the first attempt's: its id is the one to stop or resume)."""
        ...

    @property
    def cache_status(self) -> str: ...

    @property
    def answered_by(self) -> str:
        """The served model that answered (differs from `job.request.model` after a fallback)."""
        ...

    @property
    def rate_limit(self) -> dict[str, str]:
        """The `x-ratelimit-*` headers of the caller's limits as of admission (empty: none applied)."""
        ...

    def another_reader(self) -> AnswerStream: ...

    def entries(self) -> AsyncGenerator[StreamEntry, None]: ...

    def events(self) -> AsyncGenerator[GenerationEvent, None]: ...

    async def collect(self) -> tuple[str, GenerationEnd]: ...

    async def cancel(self) -> None: ...


@dataclass(slots=True)
class GenerationStream(ReadsAnswer):
    """A submitted job's stream, read from the start or after an entry id. Iterate once.

    `cancel_on_close`: leaving before the end cancels the job (an API client
    that hung up); chat replies are detached from their connection instead,
    and go on being generated and stored while the client reconnects.
    `is_observed`: this reader records the job's latency metrics (only the
    reader that submitted the job, so a job is counted once).
    """

    job: Job
    broker: Broker
    metrics: Metrics
    after: str | None = None
    cancel_on_close: bool = True
    is_observed: bool = True
    last_entry_id: str | None = None
    cached: CachedAnswer | None = None
    """Set when the answer came from the response cache: no job ran."""
    cache_store: CacheStore | None = None
    """Called with the whole text when a cacheable answer completes (the submitting reader only)."""
    on_service_time: Callable[[str, float], None] | None = None
    """Told (model, seconds from first text to end) when an observed generation ends (load shedding)."""
    draining: Draining | None = None
    """Counts this reader as a stream in flight, which a draining server lets finish."""

    @property
    def cache_status(self) -> str:
        """`hit`, `miss` (cacheable, generated now) or `bypass` (not cacheable): `x-ziggurat-cache`."""
        if self.cached is not None:
            return "hit"
        return "miss" if self.cache_store is not None else "bypass"

    @property
    def answered_by(self) -> str:
        return self.job.request.model

    @property
    def rate_limit(self) -> dict[str, str]:
        return {}

    def another_reader(self) -> GenerationStream:
        """An independent reader of the same answer from its start (it never cancels the job)."""
        if self.cached is not None:
            return dataclasses.replace(self, cache_store=None, is_observed=False, cancel_on_close=False)
        return dataclasses.replace(
            self, after=None, cancel_on_close=False, is_observed=False, cache_store=None, last_entry_id=None
        )

    def entries(self) -> AsyncGenerator[StreamEntry, None]:
        # The reader itself, not a generator around it: one layer fewer per entry, and
        # closing the caller's iterator closes the read at once.
        if self.cached is not None:
            return self._replay_cached(self.cached)
        return self._read_job()

    async def _replay_cached(self, cached: CachedAnswer) -> AsyncGenerator[StreamEntry, None]:
        if self.is_observed:
            self.metrics.time_to_first_token.labels(self.job.request.model).observe(0.0)
            self._record_end(GenerationEnd(cached.finish_reason, cached.usage), 0.0)
        if cached.text:
            yield StreamEntry("0-1", TextDelta(cached.text), cached.usage.completion_tokens)
        yield StreamEntry("0-2", GenerationEnd(cached.finish_reason, cached.usage))

    async def _read_job(self) -> AsyncGenerator[StreamEntry, None]:
        model = self.job.request.model
        started = self.job.submitted_at
        last_text_at: float | None = None
        first_text_at: float | None = None
        ttft = self.metrics.time_to_first_token.labels(model)
        gap = self.metrics.inter_token_latency.labels(model)
        active = self.metrics.active_streams.labels(model)
        is_finished = False
        unfinished_status = "cancelled"
        parts: list[str] | None = [] if self.cache_store is not None else None
        active.inc()
        if self.draining is not None:
            self.draining.stream_started()
        try:
            async with aclosing(self.broker.read(self.job.job_id, after=self.after)) as entries:
                async for entry in entries:
                    self.last_entry_id = entry.entry_id
                    event = entry.event
                    if parts is not None:
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                        elif self.cache_store is not None:
                            await self.cache_store("".join(parts), event)
                    if self.is_observed:
                        now = time.monotonic()
                        if isinstance(event, TextDelta):
                            if last_text_at is None:
                                first_text_at = now
                                ttft.observe(now - started)
                            else:
                                gap.observe(now - last_text_at)
                            last_text_at = now
                        else:
                            self._record_end(event, now - started)
                            if self.on_service_time is not None and first_text_at is not None:
                                self.on_service_time(model, now - first_text_at)
                    if isinstance(event, GenerationEnd):
                        is_finished = True
                    yield entry
        except Exception:
            unfinished_status = "error"
            raise
        finally:
            active.dec()
            if self.is_observed and not is_finished:
                self.metrics.requests.labels(model, unfinished_status).inc()
            if self.draining is not None:
                self.draining.stream_ended()
            if not is_finished and self.cancel_on_close:
                _spawn_cancel(self.broker, self.job.job_id)

    def _record_end(self, end: GenerationEnd, elapsed_s: float) -> None:
        model = self.job.request.model
        self.metrics.e2e_latency.labels(model).observe(elapsed_s)
        self.metrics.prompt_tokens.labels(model).inc(end.usage.prompt_tokens)
        self.metrics.completion_tokens.labels(model).inc(end.usage.completion_tokens)
        self.metrics.generations.labels(model, end.finish_reason).inc()
        self.metrics.requests.labels(model, _REQUEST_STATUS[end.finish_reason]).inc()

    async def cancel(self) -> None:
        await self.broker.cancel(self.job.job_id)


_cancels: set[asyncio.Task[None]] = set()


def _spawn_cancel(broker: Broker, job_id: str) -> None:
    """Cancel in a task of its own: the reader that left may itself be being cancelled."""

    async def cancel() -> None:
        try:
            await broker.cancel(job_id)
        except Exception as exc:  # the job then runs to its end; nothing else is at stake
            log.warning("job_cancel_failed", job_id=job_id, error_type=type(exc).__name__)

    task = asyncio.get_running_loop().create_task(cancel())
    _cancels.add(task)
    task.add_done_callback(_cancels.discard)
