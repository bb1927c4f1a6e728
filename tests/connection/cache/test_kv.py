"""`KeyValueStore` contract on memory and Redis, and how the Redis store rides out an outage."""

import asyncio
import logging

import pytest
import redis.asyncio as redis

from tests.connection.cache.conftest import REAL_REDIS_TIMEOUT_S
from tests.connection.cache.fakes import SilentServer, TcpProxy
from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore


async def test_set_get_delete(store: KeyValueStore) -> None:
    assert await store.get("a") is None
    assert await store.set("a", b"\x00\xffbytes", 60)
    assert await store.set("b", b"two", 60)
    assert await store.get("a") == b"\x00\xffbytes"
    assert await store.delete("a", "b", "never-set")
    assert await store.get("a") is None
    assert await store.get("b") is None
    assert await store.delete()


async def test_entries_expire(store: KeyValueStore) -> None:
    await store.set("short", b"x", 0.05)
    await store.set("long", b"y", 60)
    await asyncio.sleep(0.15)
    assert await store.get("short") is None
    assert await store.get("long") == b"y"


async def test_reading_with_refresh_restarts_the_expiry(store: KeyValueStore) -> None:
    await store.set("k", b"v", 0.3)
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await store.get("k", refresh_ttl_s=0.3) == b"v"
    await asyncio.sleep(0.45)
    assert await store.get("k") is None


async def test_update_changes_only_an_existing_value(store: KeyValueStore) -> None:
    calls: list[bytes] = []

    def double(value: bytes) -> bytes:
        calls.append(value)
        return value * 2

    assert await store.update("absent", double, ttl_s=60) == "missing"
    assert calls == []
    assert await store.get("absent") is None
    await store.set("k", b"ab", 60)
    assert await store.update("k", double, ttl_s=60) == "updated"
    assert await store.get("k") == b"abab"
    assert await store.update("k", lambda value: None, ttl_s=60) == "deleted"
    assert await store.get("k") is None


async def test_concurrent_updates_lose_nothing(store: KeyValueStore) -> None:
    await store.set("counter", b"0", 60)

    async def increment() -> None:
        outcome = await store.update("counter", lambda value: str(int(value) + 1).encode(), ttl_s=60)
        assert outcome == "updated"

    await asyncio.gather(*(increment() for _ in range(3)))
    assert await store.get("counter") == b"3"


async def test_ping(store: KeyValueStore) -> None:
    assert await store.ping()


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryKeyValueStore(max_entries=3)
    for key in "abc":
        await store.set(key, key.encode(), 60)
    assert await store.get("a") == b"a"  # now the most recently used
    await store.set("d", b"d", 60)
    assert len(store) == 3
    assert await store.get("b") is None
    assert [await store.get(key) for key in "acd"] == [b"a", b"c", b"d"]


async def test_memory_store_expiry_follows_its_clock() -> None:
    now = [100.0]
    store = MemoryKeyValueStore(max_entries=10, clock=lambda: now[0])
    await store.set("k", b"v", 5)
    now[0] = 104.9
    assert await store.get("k") == b"v"
    now[0] = 105.0
    assert await store.get("k") is None
    assert len(store) == 0


@pytest.mark.redis
async def test_redis_store_keeps_its_keys_under_the_prefix(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    store = RedisKeyValueStore(redis_client, key_prefix, timeout_s=REAL_REDIS_TIMEOUT_S)
    await store.set("resp:m:u:abc", b"v", 60)
    assert await redis_client.get(f"{key_prefix}:resp:m:u:abc") == b"v"
    assert 0 < await redis_client.pttl(f"{key_prefix}:resp:m:u:abc") <= 60_000


def test_redis_store_refuses_a_decoding_client() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisKeyValueStore(redis.Redis(decode_responses=True), "p")


async def assert_behaves_as_empty(store: RedisKeyValueStore) -> None:
    assert await store.get("k") is None
    assert await store.get("k", refresh_ttl_s=5) is None
    assert not await store.set("k", b"v", 60)
    assert not await store.delete("k")
    assert await store.update("k", lambda value: value, ttl_s=60) == "failed"
    assert not await store.ping()


async def test_unreachable_redis_is_a_miss_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(host="127.0.0.1", port=1)  # nothing listens on port 1
    store = RedisKeyValueStore(client, "zigtest", timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="ziggurat.connection.cache.outage"):
        await assert_behaves_as_empty(store)
    warnings = [record for record in caplog.records if record.getMessage() == "cache_unavailable"]
    assert len(warnings) == 1
    assert warnings[0].__dict__["error_type"] in {"ConnectionError", "TimeoutError"}
    await client.aclose()


async def test_a_redis_that_never_answers_costs_at_most_the_timeout() -> None:
    server = SilentServer()
    client = redis.Redis(host="127.0.0.1", port=await server.start())
    store = RedisKeyValueStore(client, "zigtest", timeout_s=0.1)
    try:
        await assert_behaves_as_empty(store)
    finally:
        await client.aclose()
        await server.stop()


@pytest.mark.redis
async def test_redis_store_works_again_once_redis_is_back(
    redis_target: tuple[str, str], redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    _, prefix = redis_target
    kwargs = redis_client.connection_pool.connection_kwargs
    proxy = TcpProxy(kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379))
    client = redis.Redis(host="127.0.0.1", port=await proxy.start())
    store = RedisKeyValueStore(client, prefix, timeout_s=2.0)
    try:
        assert await store.set("k", b"before", 60)
        await proxy.stop()
        with caplog.at_level(logging.INFO, logger="ziggurat.connection.cache.outage"):
            assert await store.get("k") is None
            assert not await store.set("k", b"during", 60)
            await proxy.start()
            assert await store.get("k") == b"before"
        assert await store.set("k", b"after", 60)
        assert await store.get("k") == b"after"
        events = [record.getMessage() for record in caplog.records]
        assert events == ["cache_unavailable", "cache_available"]
    finally:
        await client.aclose()
        await proxy.stop()
