"""Generation as a service: pick the model, admit the job, stream its events back.

This is the one door through which every caller (the OpenAI routes, chat
conversations, background jobs) reaches a model. It resolves the model name,
submits a job to the broker with a priority (refusals raise `Overloaded` before
any byte is sent), and wraps the event stream with metrics. Closing the stream
early cancels the job, which frees the engine slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from ziggurat.connection.broker.base import Broker, Job, Priority
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
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class GenerationStream:
    """A submitted job. Iterate `events()` once; leaving early cancels the job."""

    job: Job
    broker: Broker
    metrics: Metrics

    async def events(self) -> AsyncGenerator[GenerationEvent, None]:
        model = self.job.request.model
        started = self.job.submitted_at
        last_text_at: float | None = None
        ttft = self.metrics.time_to_first_token.labels(model)
        gap = self.metrics.inter_token_latency.labels(model)
        active = self.metrics.active_streams.labels(model)
        active.inc()
        try:
            async with aclosing(self.broker.events(self.job.job_id)) as events:
                async for event in events:
                    now = time.monotonic()
                    if isinstance(event, TextDelta):
                        if last_text_at is None:
                            ttft.observe(now - started)
                        else:
                            gap.observe(now - last_text_at)
                        last_text_at = now
                    elif isinstance(event, GenerationEnd):
                        self._record_end(event, now - started)
                    yield event
        finally:
            active.dec()

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
        models: Iterable[ModelInfo],
        metrics: Metrics,
        token_counters: Mapping[str, TokenCounter] | None = None,
    ) -> None:
        self._broker = broker
        self._models = {model.name: model for model in models}
        self._metrics = metrics
        self._token_counters = dict(token_counters or {})

    def list_models(self) -> list[ModelInfo]:
        return list(self._models.values())

    def resolve_model(self, name: str | None) -> ModelInfo:
        """The named model, or the first served one when `name` is empty."""
        if not name:
            return next(iter(self._models.values()))
        model = self._models.get(name)
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

    async def submit(self, request: GenerationRequest, *, priority: Priority) -> GenerationStream:
        self.resolve_model(request.model)
        job = Job(
            job_id=request.request_id or uuid.uuid4().hex,
            request=request,
            priority=priority,
            submitted_at=time.monotonic(),
        )
        try:
            await self._broker.submit(job)
        except Overloaded:
            self._metrics.rejections.labels("queue_full").inc()
            log.warning("job_rejected", reason="queue_full", model=request.model)
            raise
        return GenerationStream(job=job, broker=self._broker, metrics=self._metrics)
