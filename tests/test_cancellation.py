"""Stopping background tasks for good, including a task that lost its cancellation."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as redis

from ziggurat.cancellation import cancel_and_wait


async def test_a_task_that_swallows_its_cancel_is_cancelled_again() -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # what asyncio.wait_for does on Python 3.11 when a result races the cancel
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, recancel_s=0.01), timeout=5)
    assert task.cancelled() and cancels == 2


async def test_failures_while_stopping_are_retrieved_not_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    done = asyncio.create_task(asyncio.sleep(0))
    failing = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0.01)
    await cancel_and_wait(done, failing)
    assert isinstance(failing.exception(), ValueError) and done.done()


async def test_loops_writing_to_redis_always_stop(redis_server_url: str, key_prefix: str) -> None:
    # redis-py waits for its socket writes with asyncio.wait_for, which on Python 3.11 can drop
    # a cancel that lands as a write completes: with a single cancel() some of these loops
    # would run on forever.
    client = redis.from_url(redis_server_url)
    chance = random.Random(3)

    async def keep_writing() -> None:
        while True:
            await client.set(f"{key_prefix}:beat", b"1", px=1000)
            await asyncio.sleep(0.001)

    try:
        for _ in range(40):
            task = asyncio.create_task(keep_writing())
            await asyncio.sleep(chance.random() * 0.01)
            await asyncio.wait_for(cancel_and_wait(task, recancel_s=0.02), timeout=5)
            assert task.done()
    finally:
        await client.delete(f"{key_prefix}:beat")
        await client.aclose()
