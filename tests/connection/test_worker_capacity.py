"""The worker, the load shedder and the advertisement follow a remote engine's capacity as the
server's reported load changes.

A fake vLLM-like server reports waiting requests and KV-cache use that the test
sets, and counts the streams it serves: the assertions are on what it saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
import redis.asyncio as redis

from tests.brokers import memory_broker, running_worker
from tests.model.engines.fake_vllm import MODEL, FakeVLLM, running_vllm
from tests.service.test_metrics import samples
from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.models import EngineModels, RedisModels
from ziggurat.connection.streams.publisher import StreamPublisher
from ziggurat.connection.worker import Worker
from ziggurat.errors import Overloaded
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    capacity_now,
)
from ziggurat.model.engines.openai import OpenAIEngine
from ziggurat.model.engines.openai_capacity import LoadPolicy
from ziggurat.service.admission import LoadShedder, QueueDeadlines
from ziggurat.service.metrics import Metrics

POLL_S = 0.05


@pytest.fixture
async def fake() -> AsyncIterator[FakeVLLM]:
    async with running_vllm(hold=True) as state:
        yield state


@pytest.fixture
async def engine(fake: FakeVLLM) -> AsyncIterator[OpenAIEngine]:
    engine = OpenAIEngine(
        base_url=fake.base_url,
        remote_model=MODEL,
        served_name="remote",
        max_concurrency=8,
        timeout_s=5.0,
        load=LoadPolicy(interval_s=POLL_S, max_kv_cache_usage=0.9),
    )
    yield engine
    await engine.aclose()


def job(job_id: str) -> Job:
    request = GenerationRequest(request_id=job_id, model="remote", messages=(ChatMessage("user", "Hi"),))
    return Job(job_id=job_id, request=request, priority=Priority.API)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for state the fake server and the poller change on their own (they signal nothing)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def answer(broker: Broker, job_id: str) -> GenerationEnd:
    async for entry in broker.read(job_id):
        if isinstance(entry.event, GenerationEnd):
            return entry.event
    raise AssertionError("no end")


async def test_the_worker_never_exceeds_the_reported_capacity_and_recovers(
    fake: FakeVLLM, engine: OpenAIEngine
) -> None:
    fake.waiting = 5  # 8 configured, 5 already waiting upstream: room for 3
    await engine.start()
    assert engine.available_capacity == 3
    broker = memory_broker()
    for index in range(10):
        await broker.submit(job(f"j{index}"))
    async with running_worker(broker, engine) as worker:
        await until(lambda: fake.open_streams == 3)
        await asyncio.sleep(6 * POLL_S)  # several readings later, still no more
        assert fake.peak_streams == 3 and worker.active_jobs == 3
        assert broker.queue_depth("remote") == 7

        fake.waiting = 0  # the server's queue drained: the full configured capacity is back
        await until(lambda: fake.open_streams == 8)
        await asyncio.sleep(6 * POLL_S)
        assert fake.peak_streams == 8 and broker.queue_depth("remote") == 2

        fake.kv_cache_usage = 0.95  # KV cache nearly full: nothing new starts, running ones go on
        await until(lambda: engine.available_capacity == 0)
        fake.release.set()
        ends = list(await asyncio.gather(*(answer(broker, f"j{index}") for index in range(8))))
        assert {end.finish_reason for end in ends} == {"stop"}
        await asyncio.sleep(6 * POLL_S)
        assert fake.total_streams == 8 and broker.queue_depth("remote") + worker.active_jobs == 2

        fake.kv_cache_usage = 0.2
        ends = list(await asyncio.gather(answer(broker, "j8"), answer(broker, "j9")))
        assert {end.finish_reason for end in ends} == {"stop"}
    assert fake.peak_streams == 8 and fake.total_streams == 10


async def test_a_job_taken_just_before_capacity_fell_waits_for_room(
    fake: FakeVLLM, engine: OpenAIEngine
) -> None:
    await engine.start()
    broker = memory_broker()
    async with running_worker(broker, engine) as worker:
        await asyncio.sleep(0.05)  # the worker waits for a job, with room for 8
        fake.waiting = 8
        await until(lambda: engine.available_capacity == 0)
        await broker.submit(job("late"))
        await asyncio.sleep(6 * POLL_S)
        assert fake.total_streams == 0 and worker.active_jobs == 0
        fake.waiting = 0
        fake.release.set()
        end = await answer(broker, "late")
        assert end.finish_reason == "stop" and fake.total_streams == 1


async def test_a_draining_worker_gives_back_a_job_it_held_for_room(
    fake: FakeVLLM, engine: OpenAIEngine
) -> None:
    await engine.start()
    broker = memory_broker()
    worker = Worker(
        jobs=broker.jobs,
        streams=broker.streams,
        publisher=StreamPublisher(broker.streams, flush_interval_s=0),
        engine=engine,
        model="remote",
    )
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    fake.waiting = 8
    await until(lambda: engine.available_capacity == 0)
    await broker.submit(job("held"))
    await asyncio.sleep(4 * POLL_S)
    assert broker.queue_depth("remote") == 0  # taken, and held
    await worker.drain(deadline=time.monotonic())
    await asyncio.wait_for(runner, 2.0)
    assert broker.queue_depth("remote") == 1 and fake.total_streams == 0


async def test_logprobs_flow_from_the_server_to_the_stream(fake: FakeVLLM, engine: OpenAIEngine) -> None:
    await engine.start()
    fake.release.set()
    broker = memory_broker()
    request = GenerationRequest(
        request_id="lp",
        model="remote",
        messages=(ChatMessage("user", "Hi"),),
        params=SamplingParams(logprobs=True, top_logprobs=1),
    )
    await broker.submit(Job(job_id="lp", request=request, priority=Priority.API))
    async with running_worker(broker, engine, flush_interval_s=0.05):
        texts: list[str] = []
        tokens: list[str] = []
        async for entry in broker.read("lp"):
            if isinstance(entry.event, TextDelta):
                texts.append(entry.event.text)
                assert entry.event.logprobs is not None
                tokens.extend(lp.token for lp in entry.event.logprobs)
            else:
                break
    assert "".join(texts) == "".join(tokens) == "Hello there, 世界!"


async def test_the_gateway_sheds_on_the_live_capacity_not_the_configured_one(
    fake: FakeVLLM, engine: OpenAIEngine
) -> None:
    # 8 configured; the server reports 6 waiting: room for 2. Ten jobs ahead at 2 s each wait
    # 10 s on 2 slots (2.5 s on 8): past the interactive deadline only with the live figure.
    shedder = LoadShedder(
        deadlines=QueueDeadlines(interactive_s=5, api_s=60, background_s=60),
        queue_depth=lambda model: 10,
        capacity=EngineModels(engine).capacity,
    )
    shedder.observe("remote", 2.0)
    await engine.start()
    shedder.check("remote", Priority.INTERACTIVE)  # the full 8 at first: 2.5 s
    fake.waiting = 6
    await until(lambda: engine.available_capacity == 2)
    assert shedder.expected_wait_s("remote") == pytest.approx(10.0)
    metrics = Metrics()
    metrics.watch_engines([engine])
    assert samples(metrics)[("ziggurat_engine_capacity", (("model", "remote"),))] == 2  # live, not 8
    with pytest.raises(Overloaded):
        shedder.check("remote", Priority.INTERACTIVE)
    fake.kv_cache_usage = 0.95  # no room at all: estimated as one slot, not left unknown
    await until(lambda: engine.available_capacity == 0)
    assert shedder.expected_wait_s("remote") == pytest.approx(20.0)
    fake.waiting, fake.kv_cache_usage = 0, 0.1
    await until(lambda: engine.available_capacity == 8)
    shedder.check("remote", Priority.INTERACTIVE)


async def test_a_worker_advertises_its_live_capacity(
    fake: FakeVLLM, engine: OpenAIEngine, redis_server_url: str, key_prefix: str
) -> None:
    client = redis.from_url(redis_server_url)
    workers, gateway = RedisModels(client, prefix=key_prefix), RedisModels(client, prefix=key_prefix)
    await engine.start()
    advertising = asyncio.create_task(
        workers.keep_advertising("w1", [engine.info], ttl_s=0.3, capacity=partial(capacity_now, engine))
    )
    try:

        async def advertised(capacity: int) -> None:
            async with asyncio.timeout(5):
                while True:  # polls Redis, which signals nothing
                    await gateway.refresh()
                    if gateway.capacity("remote") == capacity:
                        return
                    await asyncio.sleep(0.05)

        await advertised(8)
        fake.waiting = 5  # the server's queue: room for 3 of the 8 configured
        await advertised(3)
    finally:
        await cancel_and_wait(advertising)
        await client.aclose()
