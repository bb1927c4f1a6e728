"""Generation as a service: pick the model, admit the job, stream its events back.

This is the one door through which every caller (the OpenAI routes, chat
conversations, background jobs) reaches a model. It resolves the model name,
checks the caller's rate limits and quotas (`service/limits/`: `RateLimited`),
submits a job to the broker with a priority (refusals raise `Overloaded` before
any byte is sent), and wraps the event stream with metrics. Closing the stream
early cancels the job, which frees the engine slot.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.cache.response import ResponseCache, is_cacheable
from ziggurat.connection.models import ModelDirectory
from ziggurat.errors import ModelNotFound, Overloaded
from ziggurat.ids import new_id_hex
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationRequest,
    ModelInfo,
    TokenCounter,
    estimate_tokens,
)
from ziggurat.service.admission import LoadShedder
from ziggurat.service.answer_stream import AnswerStream, CacheStore, GenerationStream
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
            job_id=request.request_id or new_id_hex(),
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
        job = self._to_serving_queue(job)
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

    def _to_serving_queue(self, job: Job) -> Job:
        """A LoRA adapter's job (`base:adapter`) goes to the queue of its base model's workers."""
        info = next((model for model in self._models.models() if model.name == job.request.model), None)
        queue = info.base_model if info is not None and info.base_model else ""
        return job if job.queue == queue else dataclasses.replace(job, queue=queue)

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
