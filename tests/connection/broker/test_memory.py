"""The in-process job queue: priorities, bounds, release and dead letters."""

import pytest

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.memory import MemoryJobQueue
from ziggurat.errors import Overloaded
from ziggurat.model.engine import ChatMessage, GenerationRequest


def job(job_id: str, priority: Priority = Priority.API, model: str = "m") -> Job:
    request = GenerationRequest(request_id=job_id, model=model, messages=(ChatMessage("user", "hi"),))
    return Job(job_id=job_id, request=request, priority=priority)


async def test_highest_priority_first_and_fifo_within_priority() -> None:
    queue = MemoryJobQueue(max_queue_depth=10)
    for job_id, priority in [
        ("a", Priority.BACKGROUND),
        ("b", Priority.API),
        ("c", Priority.INTERACTIVE),
        ("d", Priority.API),
    ]:
        await queue.submit(job(job_id, priority))
    taken = [(await queue.take("m")).job.job_id for _ in range(4)]
    assert taken == ["c", "b", "d", "a"]


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    queue = MemoryJobQueue(max_queue_depth=2)
    await queue.submit(job("a"))
    await queue.submit(job("b"))
    with pytest.raises(Overloaded) as info:
        await queue.submit(job("c"))
    assert info.value.retry_after_s > 0
    assert queue.queue_depth("m") == 2


async def test_a_released_job_comes_back_ahead_of_its_priority_class() -> None:
    queue = MemoryJobQueue(max_queue_depth=10)
    await queue.submit(job("first"))
    await queue.submit(job("second"))
    delivery = await queue.take("m")
    await delivery.release()
    await delivery.release()  # idempotent
    assert [(await queue.take("m")).job.job_id for _ in range(2)] == ["first", "second"]
    assert queue.queue_depth("m") == 0


async def test_dead_lettered_jobs_never_come_back() -> None:
    queue = MemoryJobQueue(max_queue_depth=10)
    await queue.submit(job("doomed"))
    delivery = await queue.take("m")
    await delivery.dead_letter()
    await delivery.release()  # already settled: no effect
    assert [j.job_id for j in queue.dead_letters] == ["doomed"]
    assert queue.queue_depth("m") == 0


async def test_queues_are_per_model() -> None:
    queue = MemoryJobQueue(max_queue_depth=1)
    await queue.submit(job("a", model="one"))
    await queue.submit(job("b", model="two"))
    assert (queue.queue_depth("one"), queue.queue_depth("two")) == (1, 1)
    assert (await queue.take("two")).job.job_id == "b"


async def test_depth_by_priority_follows_submits_takes_and_releases() -> None:
    queue = MemoryJobQueue(max_queue_depth=10)
    assert queue.queue_depth_by_priority("m") == dict.fromkeys(Priority, 0)
    for job_id, priority in [("a", Priority.BACKGROUND), ("b", Priority.INTERACTIVE), ("c", Priority.API)]:
        await queue.submit(job(job_id, priority))
    assert queue.queue_depth_by_priority("m") == dict.fromkeys(Priority, 1)
    taken = await queue.take("m")
    assert taken.job.priority is Priority.INTERACTIVE
    assert queue.queue_depth_by_priority("m")[Priority.INTERACTIVE] == 0
    await taken.release()
    depths = queue.queue_depth_by_priority("m")
    assert depths[Priority.INTERACTIVE] == 1 and sum(depths.values()) == queue.queue_depth("m") == 3


async def test_stop_consuming_leaves_the_queue_to_other_takers() -> None:
    queue = MemoryJobQueue(max_queue_depth=10)
    await queue.stop_consuming("m")  # before `consume`: harmless
    await queue.consume("m", prefetch=1)
    await queue.submit(job("a"))
    held = await queue.take("m")
    await queue.submit(job("b"))
    await queue.stop_consuming("m")
    assert queue.queue_depth("m") == 1  # nothing was prefetched: "b" waits for whoever takes next
    await held.release()
    assert [(await queue.take("m")).job.job_id for _ in range(2)] == ["a", "b"]
