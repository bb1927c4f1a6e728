"""The lazy read deadline of the remote engine: times out reads, never the consumer, never others' cancels."""

from __future__ import annotations

import asyncio

import pytest

from ziggurat.model.engines.read_deadline import ReadDeadline


async def test_a_read_past_its_deadline_raises_timeout() -> None:
    loop = asyncio.get_running_loop()
    guard = ReadDeadline()
    started = loop.time()
    with pytest.raises(TimeoutError), guard.reading():
        guard.set(started + 0.05)
        await asyncio.sleep(5)
    assert 0.04 < loop.time() - started < 1.0


async def test_moving_the_deadline_on_keeps_a_steady_stream_alive() -> None:
    loop = asyncio.get_running_loop()
    guard = ReadDeadline()
    with guard.reading():
        for _ in range(12):  # 12 reads of 50 ms with a 300 ms window: 600 ms in all
            guard.set(loop.time() + 0.3)
            await asyncio.sleep(0.05)
            guard.done()


async def test_time_spent_by_the_consumer_does_not_count() -> None:
    loop = asyncio.get_running_loop()
    guard = ReadDeadline()
    with guard.reading():
        guard.set(loop.time() + 0.05)
        await asyncio.sleep(0.01)
        guard.done()
        await asyncio.sleep(0.12)  # the consumer holds the value well past the deadline
        guard.set(loop.time() + 0.05)
        await asyncio.sleep(0.01)
        guard.done()


async def test_an_earlier_deadline_is_honoured_although_a_later_timer_is_armed() -> None:
    loop = asyncio.get_running_loop()
    guard = ReadDeadline()
    started = loop.time()
    with pytest.raises(TimeoutError), guard.reading():
        guard.set(started + 10)
        guard.done()
        guard.set(started + 0.05)  # e.g. the total deadline comes before the next inter-token one
        await asyncio.sleep(5)
    assert loop.time() - started < 1.0


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    async def read_forever() -> None:
        guard = ReadDeadline()
        with guard.reading():
            guard.set(asyncio.get_running_loop().time() + 10)
            await asyncio.sleep(10)

    task = asyncio.create_task(read_forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_the_guard_leaves_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    guard = ReadDeadline()
    with guard.reading():
        guard.set(loop.time() + 0.05)
        guard.done()
    await asyncio.sleep(0.1)  # a stale timer would cancel this test's task here
    assert asyncio.current_task() is not None and not asyncio.current_task().cancelling()  # type: ignore[union-attr]
