"""Generation as a service: pick the model, admit the job, stream its events back.

This is the one door through which every caller (the OpenAI routes, chat
conversations, background jobs) reaches a model. It resolves the model name,
checks the caller's rate limits and quotas (`service/limits/`: `RateLimited`),
submits a job to the broker with a priority (refusals raise `Overloaded` before
any byte is sent), and wraps the event stream with metrics. Closing the stream
early cancels the job, which frees the engine slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.cache.response import CachedAnswer, ResponseCache, is_cacheable
from ziggurat.connection.models import ModelDirectory
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.errors import ModelNotFound, Overloaded
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
from ziggurat.service.answer_reading import ReadsAnswer
from ziggurat.service.lifecycle import Draining
from ziggurat.service.limits.gate import RateLimitGate
from ziggurat.service.limits.policy import LimitSubject
from ziggurat.service.limits.stream import LimitedStream
from ziggurat.service.limits.ticket import LimitTicket
from ziggurat.service.metrics import Metrics
from ziggurat.service.routing.attempts import FallbackRun, Router
from ziggurat.service.routing.fallback import FallbackStream
from ziggurat.service.routing.policy import RoutingPolicy, attempt_job_id
from ziggurat.telemetry import get_logger
from ziggurat.tracing.base import NO_TRACER, Tracer

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


@dataclass(slots=True, frozen=True)
class GenerationTelemetry:
    """Tracing (a `generation.submit` span whose context travels with the job) and prompt logging."""

    tracer: Tracer = NO_TRACER
    log_prompts: bool = False
    """Log each submitted prompt (`generation_prompt`); off by default: prompts are private."""


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
        draining: Draining | None = None,
        telemetry: GenerationTelemetry | None = None,
        routing: RoutingPolicy | None = None,
        limits: RateLimitGate | None = None,
    ) -> None:
        self._limits = limits
        self._routing = routing
        self._router = (
            Router(routing, broker, metrics, enqueue=self._enqueue, is_served=self._is_served)
            if routing is not None
            else None
        )
        self._runs: weakref.WeakValueDictionary[str, FallbackRun] = weakref.WeakValueDictionary()
        telemetry = telemetry or GenerationTelemetry()
        self._tracer = telemetry.tracer
        self._log_prompts = telemetry.log_prompts
        self._shedder = shedder
        self._draining = draining if draining is not None else Draining()
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

    def list_aliases(self) -> dict[str, ModelInfo]:
        """Each configured alias whose model is served, with that model's info."""
        aliases = self._routing.aliases if self._routing is not None else {}
        served = {model.name: model for model in self._models.models()}
        return {alias: served[target] for alias, target in aliases.items() if target in served}

    def _is_served(self, name: str) -> bool:
        return any(model.name == name for model in self._models.models())

    def check_accepting(self) -> None:
        """Raise `ShuttingDown` while this server drains: callers check before storing anything."""
        self._draining.check_accepting()

    def resolve_model(self, name: str | None) -> ModelInfo:
        """The named model (an alias gives its target), or the first served one when `name` is empty."""
        if name and self._routing is not None:
            name = self._routing.canonical(name)
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
        limits: LimitSubject | None = None,
        admission: LimitTicket | None = None,
    ) -> AnswerStream:
        """Queue `request` (or answer it from the response cache).

        `cache_scope` enables the response cache for a deterministic request:
        answers are only shared within one scope (a user id, or `shared` when
        the operator allows sharing across users).

        `limits`: the caller's rate limits and quotas, checked before the cache
        lookup (`RateLimited` when refused; a cache hit counts like any answer).
        `admission`: a ticket `admit` gave earlier (chat admits before storing
        the turn). The returned stream's submitting reader holds the ticket
        until it ends; a request that fails to start gives its tokens back.
        """
        if self._routing is not None and request.model in self._routing.aliases:
            request = dataclasses.replace(request, model=self._routing.canonical(request.model))
        if self._log_prompts:
            messages = [[message.role, message.content] for message in request.messages]
            log.info("generation_prompt", model=request.model, job_id=request.request_id, messages=messages)
        try:
            if not self._tracer.is_enabled:
                return await self._submit(request, priority, cancel_on_close, cache_scope, limits, admission)
            attributes = {"gen_ai.request.model": request.model, "ziggurat.priority": priority.name.lower()}
            with self._tracer.span("generation.submit", kind="producer", attributes=attributes) as span:
                stream = await self._submit(
                    request, priority, cancel_on_close, cache_scope, limits, admission
                )
                span.set_attribute("ziggurat.job_id", stream.job.job_id)
                span.set_attribute("ziggurat.cache", stream.cache_status)
                return stream
        except Overloaded:
            self._metrics.requests.labels(request.model, "rejected").inc()
            raise

    async def admit(
        self, request: GenerationRequest, limits: LimitSubject | None, *, prompt_tokens: int | None = None
    ) -> LimitTicket | None:
        """Charge `limits` for `request` (`RateLimited` when refused); None when no limit applies.

        `prompt_tokens`: the prompt's length when the caller has counted it already.
        """
        if limits is None or self._limits is None:
            return None
        if prompt_tokens is None:
            prompt_tokens = (
                await self.count_tokens(request.model, request.messages) if limits.counts_tokens else 0
            )
        return await self._limits.admit(
            limits, prompt_tokens=prompt_tokens, max_tokens=request.params.max_tokens
        )

    async def _submit(
        self,
        request: GenerationRequest,
        priority: Priority,
        cancel_on_close: bool,
        cache_scope: str | None,
        limits: LimitSubject | None,
        ticket: LimitTicket | None,
    ) -> AnswerStream:
        try:
            self._draining.check_accepting()
            self.resolve_model(request.model)
            if ticket is None:
                ticket = await self.admit(request, limits)
            stream = await self._start(request, priority, cancel_on_close, cache_scope)
        except BaseException:
            if ticket is not None:
                await ticket.abandon()
            raise
        return stream if ticket is None else LimitedStream(stream, ticket)

    async def _start(
        self, request: GenerationRequest, priority: Priority, cancel_on_close: bool, cache_scope: str | None
    ) -> AnswerStream:
        job = Job(
            job_id=request.request_id or uuid.uuid4().hex,
            request=request,
            priority=priority,
            submitted_at=time.monotonic(),
            enqueued_at=time.time(),
            trace_context=self._tracer.current_context(),
        )
        cache_store: CacheStore | None = None
        responses = self._responses
        if responses is not None and cache_scope is not None and is_cacheable(request):
            cached = await responses.lookup(request, scope=cache_scope)
            lookups = self._metrics.cache_lookups
            if cached is not None:
                lookups.labels("response", "hit", cached.match).inc()
                return GenerationStream(
                    job=job,
                    broker=self._broker,
                    metrics=self._metrics,
                    cached=cached,
                    draining=self._draining,
                )
            lookups.labels("response", "miss", "").inc()
            scope = cache_scope

            async def cache_store(text: str, end: GenerationEnd) -> None:
                await responses.store(request, scope=scope, text=text, end=end)

        stream = GenerationStream(
            job=job,
            broker=self._broker,
            metrics=self._metrics,
            cancel_on_close=cancel_on_close,
            cache_store=cache_store,
            on_service_time=self._shedder.observe if self._shedder is not None else None,
            draining=self._draining,
        )
        if self._router is not None and self._router.policy.applies_to(request.model):
            return await self._submit_routed(self._router, stream)
        await self._enqueue(job)
        return stream

    async def _enqueue(self, job: Job) -> None:
        """Queue one job, unless load shedding or a full queue refuses it (`Overloaded`)."""
        model = job.request.model
        if self._shedder is not None:
            try:
                self._shedder.check(model, job.priority)
            except Overloaded:
                self._metrics.rejections.labels("queue_wait").inc()
                log.warning("job_rejected", reason="queue_wait", model=model)
                raise
        try:
            await self._broker.submit(job)
        except Overloaded:
            self._metrics.rejections.labels("queue_full").inc()
            log.warning("job_rejected", reason="queue_full", model=model)
            raise

    async def _submit_routed(self, router: Router, stream: GenerationStream) -> FallbackStream:
        """Submit through the fallback chain; readers of the run follow its retries and fallbacks."""
        run = await router.start(stream.job)
        self._runs[run.job.job_id] = run
        return FallbackStream(
            run=run,
            attempt_reader=stream,
            cancel_on_close=stream.cancel_on_close,
            cache_store=stream.cache_store,
        )

    def attach(self, job_id: str, model: str, *, after: str | None = None) -> AnswerStream:
        """Another reader of a job already submitted (by any gateway): resume a stream, store a reply.

        It never cancels the job when it leaves and records no latency metrics. A
        request this gateway routes is read through its run, so it follows
        fallbacks; elsewhere, the first attempt's stream is read.
        """
        run = self._runs.get(job_id)
        if run is not None and self._router is not None:
            template = GenerationStream(
                job=run.job, broker=self._broker, metrics=self._metrics, draining=self._draining
            )
            return FallbackStream(
                run=run, attempt_reader=template, after=after, cancel_on_close=False, is_observed=False
            )
        request = GenerationRequest(request_id=job_id, model=model, messages=())
        return GenerationStream(
            job=Job(job_id=job_id, request=request, submitted_at=time.monotonic()),
            broker=self._broker,
            metrics=self._metrics,
            after=after,
            cancel_on_close=False,
            is_observed=False,
            draining=self._draining,
        )

    async def cancel(self, job_id: str) -> None:
        """Stop a job wherever it runs (or before it runs), with any retry or fallback it became."""
        run = self._runs.get(job_id)
        if run is not None:
            await run.stop()
            return
        await self._broker.cancel(job_id)
        # Routed on another gateway, the request may have become later attempts: stop those too.
        attempts = self._routing.max_attempts if self._routing is not None else 1
        for attempt in range(1, attempts):
            await self._broker.cancel(attempt_job_id(job_id, attempt))
