"""The coalescing publisher: deltas that carry several tokens are counted as tokens, not deltas."""

from __future__ import annotations

from contextlib import aclosing

from tests.brokers import memory_broker
from ziggurat.connection.streams.publisher import StreamPublisher
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage


async def test_a_slice_of_several_tokens_counts_them_all() -> None:
    streams = memory_broker().streams
    claim = await streams.claim("job-1")
    publisher = StreamPublisher(streams, flush_interval_s=0.0)
    writer = publisher.writer("job-1", claim.epoch)

    assert writer.add("Hello", None, 1)  # the first delta goes out at once
    await writer.flush()
    assert writer.add(" big wide world", None, 3)
    await writer.flush()
    assert writer.written_tokens == 4

    # A worker taking the job over continues after four tokens, not after two deltas.
    takeover = await streams.claim("job-1")
    assert (takeover.text, takeover.tokens) == ("Hello big wide world", 4)
    successor = publisher.writer("job-1", takeover.epoch)
    await successor.finish(GenerationEnd("stop", Usage(2, 4)))
    async with aclosing(streams.read("job-1")) as entries:
        read = [entry async for entry in entries]
    assert [(entry.event.text, entry.tokens) for entry in read if isinstance(entry.event, TextDelta)] == [
        ("Hello", 1),
        (" big wide world", 3),
    ]
