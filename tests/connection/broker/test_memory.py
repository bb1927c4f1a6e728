import asyncio

import pytest

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.memory import MemoryBroker
from ziggurat.errors import Overloaded
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, TextDelta, Usage


def job(job_id: str, priority: Priority = Priority.API, model: str = "m") -> Job:
    request = GenerationRequest(request_id=job_id, model=model, messages=(ChatMessage("user", "hi"),))
    return Job(job_id=job_id, request=request, priority=priority)


async def test_highest_priority_first_and_fifo_within_priority() -> None:
    broker = MemoryBroker(max_queue_depth=10, stream_buffer_events=10)
    for job_id, priority in [
        ("a", Priority.BACKGROUND),
        ("b", Priority.API),
        ("c", Priority.INTERACTIVE),
        ("d", Priority.API),
    ]:
        await broker.submit(job(job_id, priority))
    taken = [(await broker.take("m")).job_id for _ in range(4)]
    assert taken == ["c", "b", "d", "a"]


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    broker = MemoryBroker(max_queue_depth=2, stream_buffer_events=10)
    await broker.submit(job("a"))
    await broker.submit(job("b"))
    with pytest.raises(Overloaded) as info:
        await broker.submit(job("c"))
    assert info.value.retry_after_s > 0
    assert broker.queue_depth("m") == 2


async def test_events_flow_back_and_end() -> None:
    broker = MemoryBroker(max_queue_depth=2, stream_buffer_events=10)
    await broker.submit(job("a"))
    taken = await broker.take("m")
    await broker.publish(taken.job_id, TextDelta("hel"))
    await broker.publish(taken.job_id, TextDelta("lo"))
    await broker.publish(taken.job_id, GenerationEnd("stop", Usage(1, 2)))
    received = [event async for event in broker.events("a")]
    assert received[:2] == [TextDelta("hel"), TextDelta("lo")]
    assert isinstance(received[2], GenerationEnd)


async def test_leaving_the_stream_cancels_the_job() -> None:
    broker = MemoryBroker(max_queue_depth=2, stream_buffer_events=10)
    await broker.submit(job("a"))
    await broker.take("m")
    await broker.publish("a", TextDelta("x"))
    events = broker.events("a")
    assert await anext(events) == TextDelta("x")
    watcher = asyncio.ensure_future(broker.wait_cancelled("a"))
    await events.aclose()
    await asyncio.wait_for(watcher, timeout=1)


async def test_cancelled_job_in_queue_is_skipped() -> None:
    broker = MemoryBroker(max_queue_depth=5, stream_buffer_events=10)
    await broker.submit(job("a"))
    await broker.submit(job("b"))
    await broker.cancel("a")
    assert (await broker.take("m")).job_id == "b"


async def test_cancel_ends_a_waiting_reader_with_a_cancelled_end() -> None:
    broker = MemoryBroker(max_queue_depth=2, stream_buffer_events=10)
    await broker.submit(job("a"))
    await broker.take("m")
    await broker.publish("a", TextDelta("partial"))
    events = broker.events("a")
    assert await anext(events) == TextDelta("partial")
    reader = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await broker.cancel("a")
    end = await asyncio.wait_for(reader, timeout=1)
    assert isinstance(end, GenerationEnd) and end.finish_reason == "cancelled"
    await broker.publish("a", TextDelta("too late"))
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_cancel_with_a_full_buffer_ends_the_stream_after_the_buffered_events() -> None:
    broker = MemoryBroker(max_queue_depth=2, stream_buffer_events=2)
    await broker.submit(job("a"))
    await broker.take("m")
    await broker.publish("a", TextDelta("x"))
    await broker.publish("a", TextDelta("y"))
    await broker.cancel("a")
    received = [event async for event in broker.events("a")]
    assert received[:2] == [TextDelta("x"), TextDelta("y")]
    assert isinstance(received[2], GenerationEnd) and received[2].finish_reason == "cancelled"
