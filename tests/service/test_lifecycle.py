"""Draining: the state a stopping process is in, and who may still start work."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ziggurat.errors import Overloaded, ShuttingDown
from ziggurat.service.lifecycle import RETRY_AFTER_S, Draining


def test_new_work_is_refused_once_draining_with_a_retry_after() -> None:
    draining = Draining(grace_s=30)
    draining.check_accepting()
    assert not draining.is_draining and not draining.is_drained
    draining.begin()
    with pytest.raises(ShuttingDown) as refused:
        draining.check_accepting()
    assert isinstance(refused.value, Overloaded)  # a 503 with Retry-After, like any overload
    assert refused.value.retry_after_s == RETRY_AFTER_S


def test_drained_once_no_stream_is_left_or_the_grace_period_is_over() -> None:
    draining = Draining(grace_s=30)
    draining.stream_started()
    draining.begin()
    jobs = [1]
    draining.watch(lambda: jobs[0])
    assert draining.is_draining and not draining.is_drained
    assert draining.in_flight == 2
    draining.stream_ended()
    assert not draining.is_drained  # a worker's job is still running
    jobs[0] = 0
    assert draining.is_drained

    impatient = Draining(grace_s=0.01)
    impatient.stream_started()
    impatient.begin()
    deadline = impatient.deadline
    impatient.begin()  # a second signal does not move the deadline
    assert impatient.deadline == deadline
    time.sleep(0.02)
    assert impatient.is_drained and impatient.in_flight == 1


async def test_waiters_wake_when_draining_begins_even_from_another_thread() -> None:
    draining = Draining()
    waiter = asyncio.create_task(draining.wait_begun())
    await asyncio.sleep(0)
    assert not waiter.done()
    thread = threading.Thread(target=draining.begin)
    thread.start()
    thread.join()
    await asyncio.wait_for(waiter, 2)
    await asyncio.wait_for(draining.wait_begun(), 1)  # once begun, waiting returns at once
