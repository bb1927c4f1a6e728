"""The read ticker: slots shared by streams, whose timer resumes the transports paused for it."""

from __future__ import annotations

import asyncio

import pytest

from ziggurat.model.engines.read_pacing import SLOTS, ReadTicker


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


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReadTicker(0)


class _Transport(asyncio.ReadTransport):
    def __init__(self, loop: asyncio.AbstractEventLoop, *, flow_control: bool = True) -> None:
        super().__init__()
        self.loop = loop
        self.flow_control = flow_control
        self.is_closed = False
        self.calls: list[str] = []
        self.resumed_at = 0.0

    def pause_reading(self) -> None:
        if not self.flow_control:
            raise NotImplementedError
        self.calls.append("pause")

    def resume_reading(self) -> None:
        if self.is_closed:
            raise RuntimeError("closed")
        self.calls.append("resume")
        self.resumed_at = self.loop.time()


async def test_transports_paused_for_one_slot_resume_together_and_another_slot_later() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.1)
    tick = ticker.first_tick(loop.time())
    a, b, c = _Transport(loop), _Transport(loop), _Transport(loop)
    ticker.pause(a, tick)
    ticker.pause(b, tick)
    ticker.pause(c, tick + 3)
    assert a.calls == b.calls == c.calls == ["pause"]

    await asyncio.sleep(tick * 0.1 / SLOTS - loop.time() + 0.005)
    assert a.calls == b.calls == ["pause", "resume"]  # one timer resumed both
    assert c.calls == ["pause"]  # three slots (30 ms) later
    assert abs(a.resumed_at - b.resumed_at) < 1e-3
    assert a.resumed_at >= tick * 0.1 / SLOTS - 0.002

    await asyncio.sleep(0.04)
    assert c.calls == ["pause", "resume"]
    assert c.resumed_at - a.resumed_at > 0.02


async def test_a_transport_without_flow_control_reads_on_unpaced() -> None:
    ticker = ReadTicker(0.02)
    transport = _Transport(asyncio.get_running_loop(), flow_control=False)
    ticker.pause(transport, ticker.first_tick(asyncio.get_running_loop().time()))
    await asyncio.sleep(0.05)
    assert transport.calls == []  # never paused, so nothing to resume


async def test_a_transport_closed_while_paused_is_resumed_quietly() -> None:
    loop = asyncio.get_running_loop()
    ticker = ReadTicker(0.02)
    transport = _Transport(loop)
    ticker.pause(transport, ticker.first_tick(loop.time()))
    transport.is_closed = True  # the stream was cancelled and its connection closed
    await asyncio.sleep(0.05)  # the slot's timer runs and raises nothing
    assert transport.calls == ["pause"]
