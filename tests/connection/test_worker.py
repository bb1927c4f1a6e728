import asyncio
from collections.abc import AsyncIterator

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.memory import MemoryBroker
from ziggurat.connection.worker import Worker
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
)
from ziggurat.model.engines.demo import DemoEngine


def job(job_id: str) -> Job:
    request = GenerationRequest(request_id=job_id, model="demo", messages=(ChatMessage("user", "tell me"),))
    return Job(job_id=job_id, request=request, priority=Priority.API)


def demo(capacity: int, inter_token_s: float) -> DemoEngine:
    return DemoEngine(
        served_name="demo",
        capacity=capacity,
        time_to_first_token_s=0,
        inter_token_s=inter_token_s,
        default_max_tokens=512,
    )


async def test_worker_never_runs_more_jobs_than_capacity() -> None:
    broker = MemoryBroker(max_queue_depth=10, stream_buffer_events=1000)
    engine = demo(capacity=2, inter_token_s=0.01)
    worker = Worker(broker=broker, engine=engine, model="demo")
    for index in range(5):
        await broker.submit(job(f"j{index}"))
    runner = asyncio.ensure_future(worker.run())
    try:
        await asyncio.sleep(0.05)
        assert engine.active_count == 2
        assert broker.queue_depth("demo") == 3
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_cancel_frees_the_slot_for_the_next_job() -> None:
    broker = MemoryBroker(max_queue_depth=10, stream_buffer_events=1000)
    engine = demo(capacity=1, inter_token_s=0.02)
    worker = Worker(broker=broker, engine=engine, model="demo")
    runner = asyncio.ensure_future(worker.run())
    try:
        await broker.submit(job("first"))
        await broker.submit(job("second"))
        events = broker.events("first")
        assert isinstance(await anext(events), TextDelta)
        await events.aclose()
        second = [event async for event in broker.events("second")]
        assert isinstance(second[-1], GenerationEnd) and second[-1].finish_reason == "stop"
        assert engine.cancelled_count == 1
        assert worker.cancelled_count == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


class FailingEngine:
    info = ModelInfo(name="broken", engine="test")
    capacity = 1
    is_ready = True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta("partial")
        raise KeyError("engine bug")


async def test_engine_crash_becomes_an_error_event() -> None:
    broker = MemoryBroker(max_queue_depth=10, stream_buffer_events=1000)
    worker = Worker(broker=broker, engine=FailingEngine(), model="broken")
    runner = asyncio.ensure_future(worker.run())
    try:
        request = GenerationRequest(request_id="x", model="broken", messages=(ChatMessage("user", "hi"),))
        await broker.submit(Job(job_id="x", request=request))
        events = [event async for event in broker.events("x")]
        assert events[0] == TextDelta("partial")
        end = events[-1]
        assert isinstance(end, GenerationEnd) and end.finish_reason == "error"
        assert end.error and "engine bug" not in end.error
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
