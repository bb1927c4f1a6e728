"""`SessionCache` on memory and Redis: write-through rows per conversation, bounded and expiring."""

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

from tests.connection.cache.conftest import MakeStore
from tests.connection.cache.fakes import TcpProxy
from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore
from ziggurat.connection.cache.session import SessionCache

ROWS: list[dict[str, str | None]] = [
    {"id": "m1", "role": "user", "content": "Hi", "parent_id": None},
    {"id": "m2", "role": "assistant", "content": "Hello!", "parent_id": "m1", "status": "done"},
]


@pytest.fixture
def sessions(store: KeyValueStore) -> SessionCache:
    return SessionCache(store, ttl_s=60)


async def test_put_then_get_returns_the_rows(sessions: SessionCache) -> None:
    assert await sessions.get("c1") is None
    await sessions.put("c1", ROWS)
    assert await sessions.get("c1") == ROWS
    assert await sessions.get("c2") is None


async def test_rows_come_back_as_json_values(sessions: SessionCache) -> None:
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    await sessions.put("c1", [{"id": "m1", "created_at": created, "tokens": (1, 2)}])
    assert await sessions.get("c1") == [
        {"id": "m1", "created_at": "2025-01-02T03:04:05+00:00", "tokens": [1, 2]}
    ]


async def test_append_adds_at_the_end_or_replaces_the_same_id(sessions: SessionCache) -> None:
    await sessions.put("c1", ROWS[:1])
    await sessions.append("c1", ROWS[1])
    assert await sessions.get("c1") == ROWS
    replayed = {**ROWS[1], "content": "Hello again!"}
    await sessions.append("c1", replayed)
    assert await sessions.get("c1") == [ROWS[0], replayed]


async def test_append_and_update_never_create_an_entry(sessions: SessionCache) -> None:
    await sessions.append("c1", ROWS[0])
    await sessions.update("c1", "m1", {"content": "edited"})
    assert await sessions.get("c1") is None


async def test_update_merges_changes_into_the_row(sessions: SessionCache) -> None:
    await sessions.put("c1", ROWS)
    await sessions.update("c1", "m2", {"status": "streaming", "content": "Hel"})
    rows = await sessions.get("c1")
    assert rows == [ROWS[0], {**ROWS[1], "status": "streaming", "content": "Hel"}]


async def test_update_of_an_unknown_row_drops_the_entry(sessions: SessionCache) -> None:
    await sessions.put("c1", ROWS)
    await sessions.update("c1", "m9", {"status": "done"})
    assert await sessions.get("c1") is None


async def test_invalidate(sessions: SessionCache) -> None:
    await sessions.put("c1", ROWS)
    await sessions.put("c2", ROWS)
    await sessions.invalidate("c1")
    await sessions.invalidate("never-cached")
    assert await sessions.get("c1") is None
    assert await sessions.get("c2") == ROWS


async def test_an_idle_conversation_expires_and_an_active_one_stays(make_store: MakeStore) -> None:
    sessions = SessionCache(make_store(), ttl_s=0.3)
    await sessions.put("idle", ROWS)
    await sessions.put("active", ROWS)
    await sessions.put("short", ROWS, ttl_s=0.05)
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await sessions.get("active") == ROWS
    assert await sessions.get("idle") is None
    assert await sessions.get("short") is None


async def test_concurrent_appends_are_all_kept(sessions: SessionCache) -> None:
    await sessions.put("c1", [])
    new_rows = [{"id": f"m{number}", "content": str(number)} for number in range(5)]
    await asyncio.gather(*(sessions.append("c1", row) for row in new_rows))
    rows = await sessions.get("c1")
    assert rows is not None
    assert sorted(row["id"] for row in rows) == [row["id"] for row in new_rows]


async def test_the_memory_cache_keeps_the_most_recent_conversations() -> None:
    sessions = SessionCache(MemoryKeyValueStore(max_entries=2), ttl_s=60)
    await sessions.put("c1", ROWS)
    await sessions.put("c2", ROWS)
    assert await sessions.get("c1") == ROWS
    await sessions.put("c3", ROWS)
    assert await sessions.get("c2") is None
    assert await sessions.get("c1") == ROWS
    assert await sessions.get("c3") == ROWS


async def test_an_unreadable_entry_is_dropped(sessions: SessionCache, store: KeyValueStore) -> None:
    await store.set("sess:c1", b'{"not": "a list"}', 60)
    assert await sessions.get("c1") is None
    assert await store.get("sess:c1") is None


async def test_unreachable_redis_is_a_miss_and_never_raises() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    sessions = SessionCache(RedisKeyValueStore(client, "zigtest", timeout_s=0.1), ttl_s=60)
    try:
        await sessions.put("c1", ROWS)
        await sessions.append("c1", ROWS[0])
        await sessions.update("c1", "m1", {"content": "x"})
        await sessions.invalidate("c1")
        assert await sessions.get("c1") is None
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_write_lost_in_an_outage_never_leaves_stale_rows(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    proxy = TcpProxy(kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379))
    client = redis.Redis(host="127.0.0.1", port=await proxy.start())
    sessions = SessionCache(RedisKeyValueStore(client, key_prefix, timeout_s=2.0), ttl_s=60)
    try:
        await sessions.put("c1", ROWS[:1])
        await proxy.stop()
        await sessions.append("c1", ROWS[1])  # lost: Redis still holds the one-row list
        await proxy.start()
        assert await redis_client.exists(f"{key_prefix}:sess:c1")
        assert await sessions.get("c1") is None
        assert not await redis_client.exists(f"{key_prefix}:sess:c1")
        await sessions.put("c1", ROWS)
        assert await sessions.get("c1") == ROWS
    finally:
        await client.aclose()
        await proxy.stop()
