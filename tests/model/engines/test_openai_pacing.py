"""The remote engine reading its upstream at a pace (RelayPolicy.read_interval_s) against a fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.model.engines.fake_openai import FLOOD_EVENTS, FLOOD_TEXT, HELLO_TEXT, FakeOpenAI, running_fake
from tests.model.engines.test_openai import collect, make_engine, make_request
from ziggurat.connection.streams.publisher import PACED_FLUSH_S, flush_interval_for
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationEnd, GenerationEvent, TextDelta
from ziggurat.model.engines.openai import OpenAIEngine
from ziggurat.model.engines.openai_endpoints import RelayPolicy

INTERVAL_S = 0.2


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake() as state:
        yield state


def paced_engine(fake: FakeOpenAI, **policy: float) -> OpenAIEngine:
    return make_engine(fake.base_url, relay=RelayPolicy(read_interval_s=INTERVAL_S, **policy))


async def test_the_first_text_comes_at_once_and_the_rest_in_slices(fake: FakeOpenAI) -> None:
    fake.scenario = "endless"  # a word every 10 ms
    engine = paced_engine(fake)
    await engine.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    deltas: list[tuple[float, TextDelta]] = []
    try:
        async for event in engine.generate(make_request()):
            assert isinstance(event, TextDelta)
            deltas.append((loop.time() - started, event))
            if deltas[-1][0] > 3 * INTERVAL_S:
                break
    finally:
        await engine.aclose()

    assert deltas[0][0] < INTERVAL_S / 2  # time to first token is not paced
    slices = [delta for _, delta in deltas[1:]]
    assert sum(delta.tokens for delta in slices) >= 20  # about 60 words in 0.6 s ...
    assert len(slices) <= 8  # ... read in one slice per tick (about 4), not one read per word
    for delta in slices:  # a slice is one delta that counts its tokens
        assert delta.text == "tick " * delta.tokens


async def test_a_slice_with_logprobs_keeps_one_delta_per_token(fake: FakeOpenAI) -> None:
    fake.scenario = "short"  # the whole answer in one write: one read, one slice
    engine = paced_engine(fake)
    await engine.start()
    try:
        events, text = await collect(engine, make_request(logprobs=True))
    finally:
        await engine.aclose()
    assert text == "Hi"
    assert all(isinstance(event, TextDelta) and event.tokens == 1 for event in events[:-1])


async def test_a_paced_answer_is_whole_and_its_connection_reused(fake: FakeOpenAI) -> None:
    engine = paced_engine(fake)
    await engine.start()
    try:
        events, text = await collect(engine, make_request())
        await collect(engine, make_request())
    finally:
        await engine.aclose()

    assert text == HELLO_TEXT
    end = events[-1]
    assert isinstance(end, GenerationEnd) and end.finish_reason == "stop"
    assert end.usage.completion_tokens == 5
    assert fake.peers[0] == fake.peers[1]  # the paused-then-drained connection went back to the pool


async def test_a_burst_larger_than_the_read_buffer_arrives_whole(fake: FakeOpenAI) -> None:
    # A consumer that holds each slice a while leaves the connection unpaused meanwhile, so
    # aiohttp's buffer passes its high-water mark and aiohttp pauses the connection itself.
    # Paced reads have aiohttp resume it once per read (when a read empties the buffer),
    # not once per chunk: that must still let the rest in.
    fake.scenario = "flood"
    engine = paced_engine(fake)
    await engine.start()
    texts: list[str] = []

    async def consume_slowly() -> GenerationEvent:
        async for event in engine.generate(make_request()):
            if not isinstance(event, TextDelta):
                return event
            texts.append(event.text)
            await asyncio.sleep(0.1)
        raise AssertionError("the stream ended without an end event")

    try:
        end = await asyncio.wait_for(consume_slowly(), timeout=20)
    finally:
        await engine.aclose()

    assert "".join(texts) == FLOOD_TEXT * (FLOOD_EVENTS + 1)
    assert len(texts) < FLOOD_EVENTS // 10  # slices of many events, not a delta per event
    assert isinstance(end, GenerationEnd) and end.finish_reason == "stop"


async def test_the_inter_token_timeout_still_holds_while_paced(fake: FakeOpenAI) -> None:
    fake.scenario = "stall_after_first"
    engine = paced_engine(fake, inter_token_timeout_s=0.3)
    await engine.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(UpstreamFailed, match="timed out"):
            await collect(engine, make_request())
    finally:
        await engine.aclose()
    assert loop.time() - started < 2


async def test_cancelling_during_a_paced_wait_closes_the_connection(fake: FakeOpenAI) -> None:
    fake.scenario = "endless"
    engine = paced_engine(fake)
    await engine.start()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(make_request()):
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 5)
        await asyncio.sleep(INTERVAL_S / 4)  # inside the wait for the next tick
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(fake.disconnected.wait(), 5)
    finally:
        await engine.aclose()


class _Store:
    def __init__(self, *, remote: bool) -> None:
        self.appends_cost_a_round_trip = remote


def test_a_pacing_engine_gets_a_short_publisher_window_or_none(fake: FakeOpenAI) -> None:
    remote, local = _Store(remote=True), _Store(remote=False)
    assert (
        flush_interval_for(paced_engine(fake), 0.1, remote) == PACED_FLUSH_S
    )  # a slot's slices, one round trip
    assert flush_interval_for(paced_engine(fake), 0.1, local) == 0.0  # written as they come
    assert flush_interval_for(make_engine(fake.base_url), 0.1, local) == 0.1  # reads as it arrives
    assert flush_interval_for(make_engine(fake.base_url), 0.1, remote) == 0.1
    assert flush_interval_for(paced_engine(fake), 0.0, remote) == 0.0  # coalescing off stays off
