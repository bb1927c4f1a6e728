"""`GenerationService.submit` under limits: admitted before the cache and the queue, settled at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import pytest

from tests.brokers import memory_broker, running_worker
from tests.service.limits.conftest import FakeClock
from ziggurat.connection.broker.base import Priority
from ziggurat.connection.cache.kv import MemoryKeyValueStore
from ziggurat.connection.cache.response import ResponseCache
from ziggurat.connection.models import StaticModels
from ziggurat.errors import Overloaded, RateLimited
from ziggurat.model.engine import ChatMessage, GenerationRequest, SamplingParams, TextDelta, estimate_tokens
from ziggurat.model.engines.demo import DemoEngine
from ziggurat.service.generation import GenerationService
from ziggurat.service.limits.gate import RateLimitGate
from ziggurat.service.limits.memory import MemoryRateLimiter
from ziggurat.service.limits.policy import Bucket, Limits, LimitSubject
from ziggurat.service.metrics import Metrics

MODEL = "demo"


@dataclass
class Stack:
    generation: GenerationService
    limiter: MemoryRateLimiter
    engine: DemoEngine


def request(
    question: str = "Hello there", *, max_tokens: int = 50, temperature: float = 1.0
) -> GenerationRequest:
    return GenerationRequest(
        request_id="",
        model=MODEL,
        messages=(ChatMessage("user", question),),
        params=SamplingParams(max_tokens=max_tokens, temperature=temperature),
    )


def subject(**limits: int) -> LimitSubject:
    return LimitSubject("u1", "user", user_limits=Limits(**limits))


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    engine = DemoEngine(
        served_name=MODEL, capacity=4, time_to_first_token_s=0, inter_token_s=0, default_max_tokens=100
    )
    broker = memory_broker()
    limiter = MemoryRateLimiter(clock=FakeClock())  # time stands still: nothing refills
    metrics = Metrics()
    async with running_worker(broker, engine):
        generation = GenerationService(
            broker=broker,
            models=StaticModels([engine.info]),
            metrics=metrics,
            token_counters={MODEL: engine},
            responses=ResponseCache(MemoryKeyValueStore(100), ttl_s=60),
            limits=RateLimitGate(limiter, metrics, default_max_tokens=100),
        )
        yield Stack(generation, limiter, engine)
    await broker.aclose()


async def test_tokens_are_estimated_at_admission_and_reconciled_with_the_real_usage(stack: Stack) -> None:
    limits = subject(tokens_per_minute=5000)
    job = request(max_tokens=1000)
    prompt = await stack.engine.count_tokens(job.messages)
    first = await stack.generation.submit(job, priority=Priority.API, limits=limits)
    assert first.rate_limit["x-ratelimit-remaining-tokens"] == str(5000 - prompt - 1000)
    _, end = await first.collect()
    assert end.usage.prompt_tokens == prompt and end.usage.completion_tokens < 1000

    second = await stack.generation.submit(job, priority=Priority.API, limits=limits)
    used = end.usage.total_tokens
    assert second.rate_limit["x-ratelimit-remaining-tokens"] == str(5000 - used - prompt - 1000)
    await second.collect()


async def test_the_n_plus_first_concurrent_stream_is_refused_until_one_ends(stack: Stack) -> None:
    limits = subject(max_concurrent_streams=2)
    first = await stack.generation.submit(request(), priority=Priority.API, limits=limits)
    second = await stack.generation.submit(request(), priority=Priority.API, limits=limits)
    with pytest.raises(RateLimited) as refused:
        await stack.generation.submit(request(), priority=Priority.API, limits=limits)
    assert refused.value.retry_after_s == 1.0

    async with aclosing(first.events()) as events:  # a reader that leaves early frees its slot too
        async for event in events:
            assert isinstance(event, TextDelta)
            break
    third = await stack.generation.submit(request(), priority=Priority.API, limits=limits)
    await second.collect()
    await third.collect()
    another_reader = third.another_reader()  # other readers hold no slot
    assert another_reader.rate_limit == {}


async def test_a_cache_hit_counts_as_a_request_and_costs_its_tokens(stack: Stack) -> None:
    limits = subject(requests_per_minute=2, tokens_per_minute=1000)
    job = request(temperature=0)
    miss = await stack.generation.submit(job, priority=Priority.API, cache_scope="user:u1", limits=limits)
    _, end = await miss.collect()
    hit = await stack.generation.submit(job, priority=Priority.API, cache_scope="user:u1", limits=limits)
    assert hit.cache_status == "hit"
    await hit.collect()

    with pytest.raises(RateLimited):
        await stack.generation.submit(job, priority=Priority.API, cache_scope="user:u1", limits=limits)
    tpm = Bucket("tokens_per_minute", "user", "{u:u1}:tpm", 1000)
    probe = await stack.limiter.acquire([tpm], tokens=0, ticket="probe", lease_s=1)
    assert probe.states[0].remaining == 1000 - 2 * end.usage.total_tokens


async def test_a_request_the_queue_refuses_gives_its_tokens_and_slot_back() -> None:
    engine = DemoEngine(
        served_name=MODEL, capacity=1, time_to_first_token_s=0, inter_token_s=0, default_max_tokens=100
    )
    limiter = MemoryRateLimiter(clock=FakeClock())
    metrics = Metrics()
    broker = memory_broker(max_queue_depth=1)  # no worker: the first job waits, the second finds it full
    generation = GenerationService(
        broker=broker,
        models=StaticModels([engine.info]),
        metrics=metrics,
        limits=RateLimitGate(limiter, metrics, default_max_tokens=100),
    )
    limits = subject(tokens_per_minute=1000, max_concurrent_streams=2)
    waiting = await generation.submit(request(max_tokens=100), priority=Priority.API, limits=limits)
    with pytest.raises(Overloaded):
        await generation.submit(request(max_tokens=100), priority=Priority.API, limits=limits)
    estimate = estimate_tokens(request().messages) + 100
    assert waiting.rate_limit["x-ratelimit-remaining-tokens"] == str(1000 - estimate)
    tpm = Bucket("tokens_per_minute", "user", "{u:u1}:tpm", 1000)
    streams = Bucket("concurrent_streams", "user", "{u:u1}:streams", 2)
    probe = await limiter.acquire([tpm, streams], tokens=0, ticket="probe", lease_s=1)
    assert [state.remaining for state in probe.states] == [1000 - estimate, 0]  # the probe took the 2nd slot
    await broker.aclose()


async def test_without_a_subject_nothing_is_counted(stack: Stack) -> None:
    stream = await stack.generation.submit(request(), priority=Priority.BACKGROUND)
    assert stream.rate_limit == {}
    await stream.collect()
