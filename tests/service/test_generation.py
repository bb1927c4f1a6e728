"""`GenerationService`: token counts (the engine's own where it has one, an estimate otherwise), and the
outcome, queue time and prompt logging of each request."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import aclosing

import pytest

from tests.brokers import memory_broker, running_worker
from ziggurat.connection.broker.base import Priority
from ziggurat.connection.models import StaticModels
from ziggurat.errors import Overloaded
from ziggurat.model.engine import ChatMessage, GenerationRequest, ModelInfo, estimate_tokens
from ziggurat.model.engines.demo import DemoEngine
from ziggurat.service.generation import GenerationService, GenerationTelemetry
from ziggurat.service.metrics import Metrics

MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "How tall is the ziggurat of Ur?"))


class FixedCounter:
    def __init__(self, count: int | None) -> None:
        self.count = count

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        return self.count


def _service(counter: FixedCounter | None) -> GenerationService:
    return GenerationService(
        broker=memory_broker(max_queue_depth=1),
        models=StaticModels([ModelInfo(name="m", engine="test"), ModelInfo(name="remote", engine="test")]),
        metrics=Metrics(),
        token_counters={"m": counter} if counter is not None else None,
    )


async def test_the_engines_count_is_used_when_it_has_one() -> None:
    assert await _service(FixedCounter(42)).count_tokens("m", MESSAGES) == 42


async def test_an_estimate_stands_in_for_engines_that_cannot_count() -> None:
    assert await _service(FixedCounter(None)).count_tokens("m", MESSAGES) == estimate_tokens(MESSAGES)
    assert await _service(FixedCounter(42)).count_tokens("remote", MESSAGES) == estimate_tokens(MESSAGES)
    assert await _service(None).count_tokens("m", MESSAGES) == estimate_tokens(MESSAGES)


def requests_total(metrics: Metrics, status: str) -> float:
    value = metrics.registry.get_sample_value("ziggurat_requests_total", {"model": "demo", "status": status})
    return value or 0.0


async def test_each_request_counts_once_by_outcome(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ziggurat.service.generation")
    broker, metrics = memory_broker(max_queue_depth=1), Metrics()
    engine = DemoEngine(
        served_name="demo", capacity=1, time_to_first_token_s=0, inter_token_s=0.01, default_max_tokens=64
    )
    service = GenerationService(broker=broker, models=StaticModels([engine.info]), metrics=metrics)
    request = GenerationRequest(request_id="", model="demo", messages=MESSAGES)
    before = time.time()
    waiting = await service.submit(request, priority=Priority.API)  # no worker yet: it stays queued
    assert waiting.job.enqueued_at >= before and dict(waiting.job.trace_context) == {}
    with pytest.raises(Overloaded):
        await service.submit(request, priority=Priority.API)  # the queue holds one job
    async with running_worker(broker, engine):
        await waiting.collect()
        left = await service.submit(request, priority=Priority.INTERACTIVE)
        async with aclosing(left.events()) as events:
            await anext(events)  # the client reads a little, then goes away
    assert {
        status: requests_total(metrics, status) for status in ("ok", "rejected", "cancelled", "error")
    } == {
        "ok": 1,
        "rejected": 1,
        "cancelled": 1,
        "error": 0,
    }
    assert "generation_prompt" not in caplog.messages  # prompts are not logged by default


async def test_prompts_are_logged_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    service = GenerationService(
        broker=memory_broker(),
        models=StaticModels([ModelInfo(name="m", engine="test")]),
        metrics=Metrics(),
        telemetry=GenerationTelemetry(log_prompts=True),
    )
    with caplog.at_level(logging.INFO, logger="ziggurat.service.generation"):
        await service.submit(
            GenerationRequest(request_id="j", model="m", messages=MESSAGES), priority=Priority.API
        )
    [record] = [record for record in caplog.records if record.getMessage() == "generation_prompt"]
    assert record.__dict__["messages"] == [[message.role, message.content] for message in MESSAGES]
