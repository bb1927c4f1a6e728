"""The read ticker (slots shared by streams) and the paced transport wait of the remote engine."""

from __future__ import annotations

import asyncio

import pytest

from ziggurat.model.engines.read_pacing import SLOTS, ReadTicker, pause_until


async def test_a_first_tick_comes_about_one_interval_later_on_a_slot_boundary() -> None:
    ticker = ReadTicker(0.1)
    slot_s = 0.1 / SLOTS
    for now in (100.0, 100.004, 100.0099, 100.25):
        at = ticker.first_tick(now) * slot_s
        assert 0.1 - slot_s < at - now <= 0.1 + 1e-9
        assert abs(at / slot_s - round(at / slot_s)) < 1e-6


async def test_following_ticks_are_one_interval_apart_unless_already_past() -> None:
    ticker = ReadTicker(0.1)
    tick = ticker.first_tick(100.0)
    assert ticker.following(tick, 100.05) == tick + SLOTS
    behind = ticker.following(tick, 100.5)  # the stream was busy for longer than an interval
    assert behind * 0.1 / SLOTS > 100.5
    assert behind == ticker.first_tick(100.5) - SLOTS + 1


async def test_streams_in_one_slot_wake_together_and_other_slots_later() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.1)
    tick = ticker.first_tick(loop.time())
    woke: dict[str, float] = {}

    async def wait(name: str, at: int) -> None:
        await ticker.wait(at)
        woke[name] = loop.time()

    await asyncio.gather(wait("a", tick), wait("b", tick), wait("c", tick + 3))

    assert abs(woke["a"] - woke["b"]) < 0.005  # one timer woke both
    assert woke["c"] - woke["a"] > 0.02  # three slots (30 ms) later
    assert woke["a"] >= tick * 0.1 / SLOTS - 0.002


async def test_a_cancelled_waiter_leaves_the_others_waiting_for_the_tick() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.05)
    tick = ticker.first_tick(loop.time())
    leaving = asyncio.create_task(ticker.wait(tick))
    staying = asyncio.create_task(ticker.wait(tick))
    await asyncio.sleep(0)
    leaving.cancel()

    await asyncio.wait_for(staying, 1)
    assert staying.done() and not staying.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await leaving


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
    ticker = ReadTicker(0.02)
    transport = _Transport()
    await pause_until(ticker, ticker.first_tick(asyncio.get_running_loop().time()), transport)
    assert transport.calls == ["pause", "resume"]


async def test_the_transport_reads_again_when_the_wait_is_cancelled() -> None:
    ticker = ReadTicker(60)
    transport = _Transport()
    tick = ticker.first_tick(asyncio.get_running_loop().time())
    waiting = asyncio.create_task(pause_until(ticker, tick, transport))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert transport.calls == ["pause", "resume"]


async def test_a_finished_body_has_no_transport_and_no_wait() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pause_until(ReadTicker(60), 10**12, None)
    assert loop.time() - started < 1
