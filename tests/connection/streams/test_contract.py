"""`EventStreams` contract: the same behaviour from `MemoryStreams` and `RedisStreams`.

The Redis variant runs against the test server with a key prefix of its own
(deleted afterwards) and adds what only it has: many streams multiplexed on
one reader, several gateways, and a reader connection that drops.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import redis.asyncio as redis

from ziggurat.connection.streams import redis_shard
from ziggurat.connection.streams.base import (
    NO_FIRST_EVENT,
    STALLED,
    STREAM_LOST,
    AppendStatus,
    Chunk,
    EventStreams,
    StreamEntry,
    is_entry_id,
)
from ziggurat.connection.streams.memory import MemoryStreams
from ziggurat.connection.streams.redis import RedisStreams
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage

DEFAULTS: dict[str, Any] = {
    "max_entries": 1000,
    "ttl_s": 60.0,
    "first_event_timeout_s": 3.0,
    "idle_timeout_s": 3.0,
}
STOP = GenerationEnd("stop", Usage(3, 4))


class MakeStreams(Protocol):
    def __call__(self, **overrides: Any) -> EventStreams: ...


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(kind, Redis URL, key prefix), resolved outside the event loop (the URL fixture runs its own)."""
    if request.param == "memory":
        return "memory", "", ""
    return "redis", request.getfixturevalue("redis_server_url"), request.getfixturevalue("key_prefix")


@asynccontextmanager
async def factory(kind: str, url: str, prefix: str) -> AsyncIterator[MakeStreams]:
    created: list[EventStreams] = []

    def make(**overrides: Any) -> EventStreams:
        settings = {**DEFAULTS, **overrides}
        streams: EventStreams
        if kind == "memory":
            streams = MemoryStreams(**settings)
        else:
            streams = RedisStreams.from_url(url, prefix=prefix, **settings)
        created.append(streams)
        return streams

    try:
        yield make
    finally:
        for streams in created:
            await streams.aclose()
        if kind == "redis":
            await delete_keys(url, prefix)


async def delete_keys(url: str, prefix: str) -> None:
    client = redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def make_streams(backend: tuple[str, str, str]) -> AsyncIterator[MakeStreams]:
    async with factory(*backend) as make:
        yield make


@pytest.fixture
def streams(make_streams: MakeStreams) -> EventStreams:
    return make_streams()


async def collect(streams: EventStreams, job_id: str, after: str | None = None) -> list[StreamEntry]:
    return [entry async for entry in streams.read(job_id, after=after)]


def id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def texts(entries: list[StreamEntry]) -> list[str]:
    return [entry.event.text for entry in entries if isinstance(entry.event, TextDelta)]


def live_readers(streams: EventStreams) -> int:
    """Readers an implementation still tracks (the memory one tracks none)."""
    if isinstance(streams, RedisStreams):
        return streams._reader.subscriber_count
    return 0


async def write(streams: EventStreams, job_id: str, *items: Chunk | GenerationEnd, epoch: int = 1) -> None:
    assert await streams.append({job_id: (epoch, items)}) == {job_id: AppendStatus.OK}


async def test_entries_come_back_in_order_with_increasing_ids(streams: EventStreams) -> None:
    assert (await streams.claim("j")).epoch == 1
    await write(streams, "j", Chunk("Hel", 2), Chunk("lo", 1))
    await write(streams, "j", Chunk(" you", 1), STOP)
    entries = await collect(streams, "j")
    assert texts(entries) == ["Hel", "lo", " you"]
    assert [entry.tokens for entry in entries] == [2, 1, 1, 0]
    assert entries[-1].event == STOP
    ids = [entry.entry_id for entry in entries]
    assert all(is_entry_id(entry_id) for entry_id in ids)
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})


async def test_reading_after_an_id_resumes_exactly_after_it(streams: EventStreams) -> None:
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1), Chunk("b", 1), Chunk("c", 1), STOP)
    entries = await collect(streams, "j")
    resumed = await collect(streams, "j", after=entries[1].entry_id)
    assert resumed == entries[2:]


async def test_an_invalid_after_reads_from_the_start(streams: EventStreams) -> None:
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1), STOP)
    assert texts(await collect(streams, "j", after="not-an-id")) == ["a"]


async def test_concurrent_readers_each_get_everything(streams: EventStreams) -> None:
    await streams.claim("j")
    readers = [asyncio.create_task(collect(streams, "j")) for _ in range(2)]
    await asyncio.sleep(0.05)
    for part in "abc":
        await write(streams, "j", Chunk(part, 1))
    await write(streams, "j", STOP)
    first, second = await asyncio.gather(*readers)
    assert texts(first) == texts(second) == ["a", "b", "c"]
    assert first == second


async def test_a_reader_that_paused_gets_what_was_written_meanwhile_at_once(
    make_streams: MakeStreams,
) -> None:
    streams = make_streams(first_event_timeout_s=30.0, idle_timeout_s=30.0)
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1))
    reader = streams.read("j")
    assert texts([await anext(reader)]) == ["a"]
    await write(streams, "j", Chunk("b", 1), STOP)  # while the reader is paused after its first entry
    rest = await asyncio.wait_for(collect_rest(reader), 2.0)
    assert texts(rest) == ["b"] and rest[-1].event == STOP


async def collect_rest(reader: AsyncIterator[StreamEntry]) -> list[StreamEntry]:
    return [entry async for entry in reader]


async def test_a_second_claim_takes_over_with_the_text_so_far(streams: EventStreams) -> None:
    first = await streams.claim("j")
    assert (first.status, first.epoch, first.text, first.tokens) == ("run", 1, "", 0)
    await write(streams, "j", Chunk("Hel", 2), Chunk("lo", 3))
    second = await streams.claim("j")
    assert (second.status, second.epoch, second.text, second.tokens) == ("run", 2, "Hello", 5)


async def test_an_older_epoch_is_fenced(streams: EventStreams) -> None:
    await streams.claim("j")
    await streams.claim("j")
    assert await streams.append({"j": (1, [Chunk("x", 1)])}) == {"j": AppendStatus.FENCED}
    assert await streams.append({"j": (2, [Chunk("y", 1)])}) == {"j": AppendStatus.OK}
    assert (await streams.claim("j")).text == "y"


async def test_a_job_never_claimed_is_lost(streams: EventStreams) -> None:
    assert await streams.append({"nobody": (1, [Chunk("x", 1)])}) == {"nobody": AppendStatus.LOST}


async def test_one_append_serves_several_jobs(streams: EventStreams) -> None:
    await streams.claim("a")
    await streams.claim("b")
    await streams.claim("b")
    statuses = await streams.append(
        {"a": (1, [Chunk("x", 1), STOP]), "b": (1, [Chunk("y", 1)]), "c": (1, [Chunk("z", 1)])}
    )
    assert statuses == {"a": AppendStatus.OK, "b": AppendStatus.FENCED, "c": AppendStatus.LOST}
    assert (await streams.claim("a")).status == "finished"


async def test_a_finished_stream_is_not_claimed_again(streams: EventStreams) -> None:
    await streams.claim("j")
    await write(streams, "j", Chunk("x", 1), STOP)
    assert (await streams.claim("j")).status == "finished"
    assert texts(await collect(streams, "j")) == ["x"]


def cancel_seen(streams: EventStreams, job_id: str) -> asyncio.Event:
    """Set once the worker side of `job_id` is told of its cancel (`on_cancelled`)."""
    seen = asyncio.Event()
    streams.on_cancelled(job_id, seen.set)
    return seen


async def test_cancel_before_claim_ends_the_stream_at_once(streams: EventStreams) -> None:
    reader = asyncio.create_task(collect(streams, "j"))
    await asyncio.sleep(0.05)
    await streams.cancel("j")
    await streams.cancel("j")
    entries = await asyncio.wait_for(reader, 5.0)
    assert [entry.event for entry in entries] == [GenerationEnd("cancelled", Usage(0, 0))]
    assert (await streams.claim("j")).status == "finished"
    await asyncio.wait_for(cancel_seen(streams, "j").wait(), 5.0)


async def test_cancel_after_claim_reaches_the_worker(streams: EventStreams) -> None:
    await streams.claim("j")
    await write(streams, "j", Chunk("ab", 2))
    waiting = cancel_seen(streams, "j")
    await asyncio.sleep(0.05)
    assert not waiting.is_set()
    await streams.cancel("j")
    await asyncio.wait_for(waiting.wait(), 5.0)
    claim = await streams.claim("j")
    assert (claim.status, claim.epoch, claim.text, claim.tokens) == ("cancelled", 2, "ab", 2)


async def test_a_cancel_calls_the_workers_watch_back_once(streams: EventStreams) -> None:
    await streams.claim("j")
    calls: list[str] = []
    unwatch = streams.on_cancelled("j", lambda: calls.append("j"))
    unwatched = streams.on_cancelled("j", lambda: calls.append("gone"))
    unwatched()
    await asyncio.sleep(0.05)
    assert calls == []
    await streams.cancel("j")
    await streams.cancel("j")
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert calls == ["j"]
    unwatch()  # after the call back: harmless


async def test_a_watch_that_starts_after_the_cancel_is_still_called_back(streams: EventStreams) -> None:
    await streams.claim("j")
    await streams.cancel("j")
    await asyncio.wait_for(cancel_seen(streams, "j").wait(), 5.0)


async def test_no_first_event_times_out_with_an_error_end(make_streams: MakeStreams) -> None:
    streams = make_streams(first_event_timeout_s=0.2, idle_timeout_s=5.0)
    entries = await asyncio.wait_for(collect(streams, "j"), 2.0)
    assert len(entries) == 1
    end = entries[0].event
    assert isinstance(end, GenerationEnd)
    assert (end.finish_reason, end.error) == ("error", NO_FIRST_EVENT)
    assert is_entry_id(entries[0].entry_id)


async def test_a_stalled_stream_times_out_with_an_error_end(make_streams: MakeStreams) -> None:
    streams = make_streams(first_event_timeout_s=5.0, idle_timeout_s=0.2)
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1))
    entries = await asyncio.wait_for(collect(streams, "j"), 2.0)
    assert texts(entries) == ["a"]
    end = entries[-1].event
    assert isinstance(end, GenerationEnd)
    assert (end.finish_reason, end.error) == ("error", STALLED)


async def test_a_stream_written_more_often_than_its_idle_timeout_never_stalls(
    make_streams: MakeStreams,
) -> None:
    streams = make_streams(first_event_timeout_s=5.0, idle_timeout_s=0.25)
    await streams.claim("j")
    reading = asyncio.create_task(collect(streams, "j"))
    for letter in "abcdefgh":  # 0.8 s in all, three idle timeouts' worth, never 0.25 s apart
        await write(streams, "j", Chunk(letter, 1))
        await asyncio.sleep(0.1)
    await write(streams, "j", GenerationEnd("stop", Usage(1, 8)))
    entries = await asyncio.wait_for(reading, 5.0)
    assert texts(entries) == list("abcdefgh")
    end = entries[-1].event
    assert isinstance(end, GenerationEnd) and end.finish_reason == "stop"


async def test_a_reader_that_leaves_early_is_forgotten(streams: EventStreams) -> None:
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1), Chunk("b", 1))
    reader = streams.read("j")
    assert texts([await anext(reader)]) == ["a"]
    assert live_readers(streams) <= 1
    await reader.aclose()
    assert live_readers(streams) == 0
    waiting = asyncio.create_task(anext(streams.read("empty")))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert live_readers(streams) == 0


async def test_old_entries_are_trimmed_at_max_entries(make_streams: MakeStreams) -> None:
    streams = make_streams(max_entries=3)
    await streams.claim("j")
    await write(streams, "j", *(Chunk(str(n), 1) for n in range(5)), STOP)
    entries = await collect(streams, "j")
    assert texts(entries) == ["3", "4"]
    assert entries[-1].event == STOP


# Redis only


@pytest.fixture
async def redis_streams(redis_server_url: str, key_prefix: str) -> AsyncIterator[Callable[..., RedisStreams]]:
    async with factory("redis", redis_server_url, key_prefix) as make:

        def make_redis(**overrides: Any) -> RedisStreams:
            streams = make(**overrides)
            assert isinstance(streams, RedisStreams)
            return streams

        yield make_redis


@pytest.mark.redis
async def test_every_key_expires(redis_streams: Callable[..., RedisStreams], redis_server_url: str) -> None:
    streams = redis_streams(ttl_s=30.0)
    await streams.claim("j")
    await write(streams, "j", Chunk("a", 1), STOP)
    await streams.cancel("j")
    reader = asyncio.create_task(collect(streams, "empty"))
    await asyncio.sleep(0.05)
    client = redis.from_url(redis_server_url, decode_responses=True)
    try:
        await streams.claim("empty")
        await write(streams, "empty", STOP)
        await asyncio.wait_for(reader, 2.0)
        keys = [key async for key in client.scan_iter(match=f"{streams._prefix}:*")]
        assert {key.split(":")[1] for key in keys} >= {"s", "e", "c", "d"}
        for key in keys:
            assert 0 < await client.pttl(key) <= 60_000, key
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_many_readers_share_one_reader_loop(redis_streams: Callable[..., RedisStreams]) -> None:
    streams = redis_streams()
    jobs = [f"j{n}" for n in range(200)]
    for job_id in jobs:
        await streams.claim(job_id)
    readers = [asyncio.create_task(collect(streams, job_id)) for job_id in jobs]
    await asyncio.sleep(0.05)
    for part in range(5):
        await streams.append({job_id: (1, [Chunk(f"{job_id}.{part} ", 1)]) for job_id in jobs})
        await asyncio.sleep(0.01)
    # Late readers join a loop that is already blocked in XREAD: the wake-up must let them in.
    late = [asyncio.create_task(collect(streams, job_id)) for job_id in jobs[:20]]
    await asyncio.sleep(0.05)
    await streams.append({job_id: (1, [STOP]) for job_id in jobs})
    results = await asyncio.wait_for(asyncio.gather(*readers, *late), 5.0)
    for job_id, entries in zip(jobs + jobs[:20], results, strict=True):
        assert texts(entries) == [f"{job_id}.{part} " for part in range(5)]
        assert entries[-1].event == STOP
    assert len(streams._reader._shards) == 1
    assert live_readers(streams) == 0


@pytest.mark.redis
async def test_a_reader_joining_a_blocked_loop_wakes_it(
    redis_streams: Callable[..., RedisStreams], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_shard, "BLOCK_MS", 60_000)  # without the wake-up, B would wait a minute
    streams = redis_streams()
    quiet = asyncio.create_task(collect(streams, "a"))
    await asyncio.sleep(0.05)  # the loop is now blocked on A alone
    await streams.claim("b")
    await write(streams, "b", Chunk("x", 1), STOP)
    assert texts(await asyncio.wait_for(collect(streams, "b"), 5.0)) == ["x"]
    quiet.cancel()


@pytest.mark.redis
async def test_a_reader_resumes_on_another_gateway(redis_streams: Callable[..., RedisStreams]) -> None:
    first, second = redis_streams(), redis_streams()
    await first.claim("j")
    await write(first, "j", Chunk("a", 1), Chunk("b", 1))
    reader = first.read("j")
    seen = [await anext(reader), await anext(reader)]
    await reader.aclose()
    await write(first, "j", Chunk("c", 1), STOP)
    rest = await collect(second, "j", after=seen[-1].entry_id)
    assert texts(seen + rest) == ["a", "b", "c"]


@pytest.mark.redis
async def test_readers_at_different_positions_share_a_stream(
    redis_streams: Callable[..., RedisStreams],
) -> None:
    streams = redis_streams()
    await streams.claim("j")
    await write(streams, "j", *(Chunk(str(n), 1) for n in range(4)))
    ids = [entry.entry_id for entry in (await collect_some(streams, "j", 4))]
    # Joining one tick apart: the second is ahead of the shared feed, the third behind it.
    ahead = asyncio.create_task(collect(streams, "j", after=ids[1]))
    start = asyncio.create_task(collect(streams, "j"))
    await asyncio.sleep(0.05)
    behind = asyncio.create_task(collect(streams, "j", after=ids[0]))
    await asyncio.sleep(0.05)
    await write(streams, "j", STOP)
    entries = await asyncio.wait_for(asyncio.gather(ahead, start, behind), 2.0)
    assert [texts(e) for e in entries] == [["2", "3"], ["0", "1", "2", "3"], ["1", "2", "3"]]


async def collect_some(streams: EventStreams, job_id: str, count: int) -> list[StreamEntry]:
    reader = streams.read(job_id)
    try:
        return [await anext(reader) for _ in range(count)]
    finally:
        await reader.aclose()


@pytest.mark.redis
async def test_a_slow_reader_pauses_its_stream_and_misses_nothing(
    redis_streams: Callable[..., RedisStreams],
) -> None:
    streams = redis_streams(max_entries=2000)
    await streams.claim("j")
    await write(streams, "j", *(Chunk(f"{n} ", 1) for n in range(1000)), STOP)
    reader = streams.read("j")
    received: list[StreamEntry] = [await anext(reader)]
    await asyncio.sleep(0.1)  # the shard reads ahead while the client is slow
    (subscriber,) = streams._reader._subscribers
    most_buffered = len(subscriber.entries)
    received += [entry async for entry in reader]
    assert texts(received) == [f"{n} " for n in range(1000)]
    assert most_buffered < redis_shard.QUEUE_LIMIT + redis_shard.READ_COUNT


async def reader_connection_id(client: redis.Redis, streams: RedisStreams) -> int:
    name = f"{streams._reader.wake_key_prefix}:reader:0"
    for entry in await client.client_list():
        if entry["name"] == name:
            return int(entry["id"])
    raise AssertionError(f"no connection named {name}")


@pytest.mark.redis
async def test_reading_survives_a_dropped_connection(
    redis_streams: Callable[..., RedisStreams], redis_server_url: str
) -> None:
    streams = redis_streams()
    await streams.claim("j")
    reader = asyncio.create_task(collect(streams, "j"))
    await write(streams, "j", Chunk("a", 1))
    await asyncio.sleep(0.05)
    client = redis.from_url(redis_server_url, decode_responses=True)
    try:
        await client.client_kill_filter(_id=await reader_connection_id(client, streams))
        await write(streams, "j", Chunk("b", 1), STOP)
        assert texts(await asyncio.wait_for(reader, 3.0)) == ["a", "b"]
        # A started stream that vanishes while the connection is down ends at once.
        await streams.claim("k")
        await write(streams, "k", Chunk("x", 1), epoch=1)
        lost = asyncio.create_task(collect(streams, "k"))
        await asyncio.sleep(0.05)
        await client.delete(f"{streams._prefix}:s:k")
        await client.client_kill_filter(_id=await reader_connection_id(client, streams))
        entries = await asyncio.wait_for(lost, 2.0)
    finally:
        await client.aclose()
    assert texts(entries) == ["x"]
    end = entries[-1].event
    assert isinstance(end, GenerationEnd)
    assert end.error == STREAM_LOST


@pytest.mark.redis
async def test_a_cancel_published_while_the_listener_was_away_is_seen(
    redis_streams: Callable[..., RedisStreams], redis_server_url: str
) -> None:
    streams = redis_streams()
    await streams.claim("j")
    await streams.claim("k")
    waiting = cancel_seen(streams, "j")
    await asyncio.sleep(0.05)
    client = redis.from_url(redis_server_url, decode_responses=True)
    try:
        name = f"{streams._prefix}:cancels:{streams.instance_id}"
        (listener,) = [c for c in await client.client_list() if c["name"] == name]
        await client.client_kill_filter(_id=int(listener["id"]))
        # The cancel key is set with no message: only the re-check after reconnecting can find it.
        await client.set(f"{streams._prefix}:c:j", "1", ex=60)
        await asyncio.wait_for(waiting.wait(), 2.0)
    finally:
        await client.aclose()
    assert streams._cancels.waiter_count == 0
