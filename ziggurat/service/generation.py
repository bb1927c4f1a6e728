"""Generation as a service: pick the model, admit the job, stream its events back.

This is the one door through which every caller (the OpenAI routes, chat
conversations, background jobs) reaches a model. It resolves the model name,
submits a job to the broker with a priority (refusals raise `Overloaded` before
any byte is sent), and wraps the event stream with metrics. Closing the stream
early cancels the job, which frees the engine slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.cache.response import CachedAnswer, ResponseCache, is_cacheable
from ziggurat.connection.models import ModelDirectory
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.errors import ModelNotFound, Overloaded, UpstreamFailed
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    TokenCounter,
    estimate_tokens,
)
from ziggurat.service.admission import LoadShedder
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

CacheStore = Callable[[str, GenerationEnd], Awaitable[None]]


@dataclass(slots=True)
class GenerationStream:
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

    @property
    def cache_status(self) -> str:
        """`hit`, `miss` (cacheable, generated now) or `bypass` (not cacheable): `x-ziggurat-cache`."""
        if self.cached is not None:
            return "hit"
        return "miss" if self.cache_store is not None else "bypass"

    def another_reader(self) -> GenerationStream:
        """An independent reader of the same answer from its start (it never cancels the job)."""
        if self.cached is not None:
            return dataclasses.replace(self, cache_store=None, is_observed=False, cancel_on_close=False)
        return dataclasses.replace(
            self, after=None, cancel_on_close=False, is_observed=False, cache_store=None, last_entry_id=None
        )

    async def entries(self) -> AsyncGenerator[StreamEntry, None]:
        if self.cached is not None:
            async for entry in self._replay_cached(self.cached):
                yield entry
            return
        async for entry in self._read_job():
            yield entry

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
        parts: list[str] | None = [] if self.cache_store is not None else None
        active.inc()
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
        finally:
            active.dec()
            if not is_finished and self.cancel_on_close:
                _spawn_cancel(self.broker, self.job.job_id)

    async def events(self) -> AsyncGenerator[GenerationEvent, None]:
        async with aclosing(self.entries()) as entries:
            async for entry in entries:
                yield entry.event

    def _record_end(self, end: GenerationEnd, elapsed_s: float) -> None:
        model = self.job.request.model
        self.metrics.e2e_latency.labels(model).observe(elapsed_s)
        self.metrics.prompt_tokens.labels(model).inc(end.usage.prompt_tokens)
        self.metrics.completion_tokens.labels(model).inc(end.usage.completion_tokens)
        self.metrics.generations.labels(model, end.finish_reason).inc()

    async def collect(self) -> tuple[str, GenerationEnd]:
        """The whole answer and its end event, for non-streaming callers."""
        parts: list[str] = []
        async with aclosing(self.events()) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                else:
                    return "".join(parts), event
        raise UpstreamFailed("The generation ended without a result.")

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


class GenerationService:
    """Routes generation requests to served models through the broker.

    `token_counters` are the engines in this process that can count tokens
    with the model's own tokenizer; a gateway without the engine (or an engine
    that cannot count yet) gets an estimate instead.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        models: ModelDirectory,
        metrics: Metrics,
        token_counters: Mapping[str, TokenCounter] | None = None,
        responses: ResponseCache | None = None,
        share_cache_across_users: bool = False,
        shedder: LoadShedder | None = None,
    ) -> None:
        self._shedder = shedder
        self._responses = responses
        self._share_cache = share_cache_across_users
        self._broker = broker
        self._models = models
        self._metrics = metrics
        self._token_counters = dict(token_counters or {})

    def cache_scope(self, user_id: str) -> str:
        """Whose cached answers a user may be served: their own, unless the operator shares them."""
        return "shared" if self._share_cache else f"user:{user_id}"

    def list_models(self) -> list[ModelInfo]:
        return self._models.models()

    def resolve_model(self, name: str | None) -> ModelInfo:
        """The named model, or the first served one when `name` is empty."""
        models = self._models.models()
        if not name:
            if not models:
                raise Overloaded("No model is being served yet; try again shortly.", retry_after_s=5)
            return models[0]
        model = next((model for model in models if model.name == name), None)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.", param="model"
            )
        return model

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int:
        """The prompt length of `messages` for `model`: its tokenizer's count when known, else an estimate."""
        counter = self._token_counters.get(model)
        if counter is not None:
            counted = await counter.count_tokens(messages)
            if counted is not None:
                return counted
        return estimate_tokens(messages)

    async def submit(
        self,
        request: GenerationRequest,
        *,
        priority: Priority,
        cancel_on_close: bool = True,
        cache_scope: str | None = None,
    ) -> GenerationStream:
        """Queue `request` (or answer it from the response cache).

        `cache_scope` enables the response cache for a deterministic request:
        answers are only shared within one scope (a user id, or `shared` when
        the operator allows sharing across users).
        """
        self.resolve_model(request.model)
        job = Job(
            job_id=request.request_id or uuid.uuid4().hex,
            request=request,
            priority=priority,
            submitted_at=time.monotonic(),
        )
        cache_store: CacheStore | None = None
        responses = self._responses
        if responses is not None and cache_scope is not None and is_cacheable(request):
            cached = await responses.lookup(request, scope=cache_scope)
            lookups = self._metrics.cache_lookups
            if cached is not None:
                lookups.labels("response", "hit", cached.match).inc()
                return GenerationStream(job=job, broker=self._broker, metrics=self._metrics, cached=cached)
            lookups.labels("response", "miss", "").inc()
            scope = cache_scope

            async def cache_store(text: str, end: GenerationEnd) -> None:
                await responses.store(request, scope=scope, text=text, end=end)

        if self._shedder is not None:
            try:
                self._shedder.check(request.model, priority)
            except Overloaded:
                self._metrics.rejections.labels("queue_wait").inc()
                log.warning("job_rejected", reason="queue_wait", model=request.model)
                raise
        try:
            await self._broker.submit(job)
        except Overloaded:
            self._metrics.rejections.labels("queue_full").inc()
            log.warning("job_rejected", reason="queue_full", model=request.model)
            raise
        return GenerationStream(
            job=job,
            broker=self._broker,
            metrics=self._metrics,
            cancel_on_close=cancel_on_close,
            cache_store=cache_store,
            on_service_time=self._shedder.observe if self._shedder is not None else None,
        )

    def attach(self, job_id: str, model: str, *, after: str | None = None) -> GenerationStream:
        """Another reader of a job already submitted (by any gateway): resume a stream, store a reply.

        It never cancels the job when it leaves and records no latency metrics.
        """
        request = GenerationRequest(request_id=job_id, model=model, messages=())
        return GenerationStream(
            job=Job(job_id=job_id, request=request, submitted_at=time.monotonic()),
            broker=self._broker,
            metrics=self._metrics,
            after=after,
            cancel_on_close=False,
            is_observed=False,
        )

    async def cancel(self, job_id: str) -> None:
        """Stop a job wherever it runs (or before it runs)."""
        await self._broker.cancel(job_id)
