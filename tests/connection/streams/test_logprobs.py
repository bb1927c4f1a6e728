"""Token logprobs in job streams: encoded with their chunk, merged by the publisher, read back in order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.connection.streams.test_contract import MakeStreams, backend, factory  # noqa: F401
from ziggurat.connection.streams.base import Chunk, EventStreams
from ziggurat.connection.streams.codec import decode, encode
from ziggurat.connection.streams.publisher import StreamPublisher
from ziggurat.model.engine import GenerationEnd, TextDelta, TokenLogprob, Usage

HELLO = TokenLogprob("Hel", -0.5, (("Hel", -0.5), ("He", -1.25)))
WORLD = TokenLogprob("lo 世界", -0.125)
END = GenerationEnd("stop", Usage(3, 2))


@pytest.fixture
async def make_streams(backend: tuple[str, str, str]) -> AsyncIterator[MakeStreams]:  # noqa: F811
    async with factory(*backend) as make:
        yield make


def test_a_chunk_without_logprobs_keeps_its_two_fields() -> None:
    assert encode(Chunk("hi", 1)) == {"t": "hi", "n": "1"}
    entry = decode("1-1", encode(Chunk("hi", 1)))
    assert entry.event == TextDelta("hi") and entry.tokens == 1


def test_logprobs_round_trip_through_the_codec() -> None:
    fields = encode(Chunk("Hello 世界", 2, (HELLO, WORLD)))
    assert set(fields) == {"t", "n", "l"}
    entry = decode("1-1", fields)
    assert entry.event == TextDelta("Hello 世界", (HELLO, WORLD)) and entry.tokens == 2


def test_unreadable_logprobs_lose_only_the_logprobs() -> None:
    entry = decode("1-1", {"t": "hi", "n": "1", "l": '[["hi"]]'})
    assert entry.event == TextDelta("hi", None)


async def read_all(streams: EventStreams, job_id: str) -> list[TextDelta]:
    deltas: list[TextDelta] = []
    async for entry in streams.read(job_id):
        if isinstance(entry.event, GenerationEnd):
            return deltas
        assert isinstance(entry.event, TextDelta)
        deltas.append(entry.event)
    raise AssertionError("no end")


async def test_the_publisher_merges_logprobs_in_order(make_streams: MakeStreams) -> None:
    streams = make_streams()
    claim = await streams.claim("job")
    publisher = StreamPublisher(streams, flush_interval_s=0.05)
    writer = publisher.writer("job", claim.epoch)
    await writer.write("Hel", (HELLO,))  # the first write goes out at once
    await writer.write("lo", (WORLD,))
    await writer.write(" 世界", (HELLO, WORLD))  # these two are coalesced into one entry
    await writer.finish(END)
    await publisher.aclose()
    deltas = await read_all(streams, "job")
    assert [delta.text for delta in deltas] == ["Hel", "lo 世界"]
    assert [delta.logprobs for delta in deltas] == [(HELLO,), (WORLD, HELLO, WORLD)]
    assert (await streams.claim("job")).status == "finished"


async def test_deltas_without_logprobs_stay_without(make_streams: MakeStreams) -> None:
    streams = make_streams()
    claim = await streams.claim("plain")
    publisher = StreamPublisher(streams, flush_interval_s=0.05)
    writer = publisher.writer("plain", claim.epoch)
    for text in ("a", "b", "c"):
        await writer.write(text)
    await writer.finish(END)
    await publisher.aclose()
    deltas = await read_all(streams, "plain")
    assert "".join(delta.text for delta in deltas) == "abc"
    assert all(delta.logprobs is None for delta in deltas) and writer.logprobs is None
