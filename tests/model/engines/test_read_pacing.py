"""The shared read ticker and the paced transport wait of the remote engine."""

from __future__ import annotations

import asyncio

import pytest

from ziggurat.model.engines.read_pacing import ReadTicker, pause_until_tick


async def test_waiters_wake_together_on_the_interval_grid() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.05)
    woke: list[float] = []

    async def wait(after_s: float) -> None:
        await asyncio.sleep(after_s)
        await ticker.next_tick()
        woke.append(loop.time())

    started = loop.time()
    await asyncio.gather(wait(0.0), wait(0.01), wait(0.02))

    assert max(woke) - min(woke) < 0.005  # one timer woke all three
    tick = woke[0]
    assert tick >= started
    assert abs(tick / 0.05 - round(tick / 0.05)) < 0.2  # on a multiple of the interval


async def test_a_cancelled_waiter_leaves_the_others_waiting_for_the_tick() -> None:
    ticker = ReadTicker(0.05)
    leaving = asyncio.create_task(ticker.next_tick())
    staying = asyncio.create_task(ticker.next_tick())
    await asyncio.sleep(0)
    leaving.cancel()

    await asyncio.wait_for(staying, 1)
    assert staying.done() and not staying.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_new_tick_is_armed_after_each_fires() -> None:
    ticker = ReadTicker(0.02)
    for _ in range(3):
        await asyncio.wait_for(ticker.next_tick(), 1)


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReadTicker(0)


class _Transport(asyncio.ReadTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def test_the_transport_reads_again_after_the_tick() -> None:
    transport = _Transport()
    await pause_until_tick(ReadTicker(0.02), transport)
    assert transport.calls == ["pause", "resume"]


async def test_the_transport_reads_again_when_the_wait_is_cancelled() -> None:
    transport = _Transport()
    waiting = asyncio.create_task(pause_until_tick(ReadTicker(60), transport))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert transport.calls == ["pause", "resume"]


async def test_a_finished_body_has_no_transport_and_no_wait() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pause_until_tick(ReadTicker(60), None)
    assert loop.time() - started < 1
