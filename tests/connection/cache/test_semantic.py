"""Semantic matching with a fake embedder: the indexes on memory and Redis, and `ResponseCache` on top.

The real model is exercised in `test_embeddings.py`.
"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
import redis.asyncio as redis

from tests.connection.cache.conftest import STOP, request
from tests.connection.cache.fakes import FakeEmbedder
from ziggurat.connection.cache.kv import KeyValueStore, RedisKeyValueStore
from ziggurat.connection.cache.response import ResponseCache
from ziggurat.connection.cache.semantic import (
    MemoryVectorIndex,
    RedisVectorIndex,
    SemanticMatcher,
    VectorIndex,
)
from ziggurat.connection.cache.vectors import VectorSet, VectorSets
from ziggurat.model.engine import ChatMessage

FRANCE = "What is the capital of France?"
FRANCE_REWORDED = "what's the capital city of France?"
BREAD = "How do I bake bread?"
CONTEXT_A = b"A" * 16
CONTEXT_B = b"B" * 16
EMBEDDINGS = {
    FRANCE: [1.0, 0.0, 0.0, 0.0],
    FRANCE_REWORDED: [0.95, 0.31, 0.0, 0.0],  # cosine 0.95 with FRANCE
    BREAD: [0.0, 0.0, 1.0, 0.0],
}
MakeIndex = Callable[..., VectorIndex]


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture
def make_index(backend: str, request: pytest.FixtureRequest) -> MakeIndex:
    if backend == "memory":
        return lambda max_entries=100, **_: MemoryVectorIndex(max_entries=max_entries, max_total_entries=1000)
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("key_prefix")
    return lambda max_entries=100, **options: RedisVectorIndex(
        client, prefix, max_entries=max_entries, **options
    )


@pytest.fixture
def index(make_index: MakeIndex) -> VectorIndex:
    return make_index()


async def test_nearest_is_the_most_similar_with_the_same_context(index: VectorIndex) -> None:
    assert await index.nearest("ns", CONTEXT_A, unit(1, 0, 0)) is None
    await index.add("ns", "k1", CONTEXT_A, unit(1, 0, 0), ttl_s=60)
    await index.add("ns", "k2", CONTEXT_A, unit(0, 1, 0), ttl_s=60)
    await index.add("ns", "k3", CONTEXT_B, unit(1, 0.1, 0), ttl_s=60)
    neighbour = await index.nearest("ns", CONTEXT_A, unit(1, 0.2, 0))
    assert neighbour is not None
    assert neighbour.key == "k1"
    assert neighbour.similarity == pytest.approx(float(unit(1, 0.2, 0) @ unit(1, 0, 0)), abs=1e-6)
    neighbour = await index.nearest("ns", CONTEXT_B, unit(0, 1, 0))
    assert neighbour is not None and neighbour.key == "k3"
    assert await index.nearest("ns", b"C" * 16, unit(1, 0, 0)) is None
    assert await index.nearest("other", CONTEXT_A, unit(1, 0, 0)) is None


async def test_a_discarded_vector_is_not_found(index: VectorIndex) -> None:
    await index.add("ns", "k1", CONTEXT_A, unit(1, 0, 0), ttl_s=60)
    await index.add("ns", "k2", CONTEXT_A, unit(1, 1, 0), ttl_s=60)
    await index.discard("ns", "k1")
    neighbour = await index.nearest("ns", CONTEXT_A, unit(1, 0, 0))
    assert neighbour is not None and neighbour.key == "k2"


async def test_each_namespace_is_bounded(make_index: MakeIndex) -> None:
    index = make_index(max_entries=3)
    for number in range(10):
        await index.add("ns", f"k{number}", CONTEXT_A, unit(1, number, 0), ttl_s=60)
    found = set()
    for number in range(10):
        neighbour = await index.nearest("ns", CONTEXT_A, unit(1, number, 0))
        assert neighbour is not None
        found.add(neighbour.key)
    assert len(found) <= 3
    assert "k9" in found


@pytest.mark.redis
async def test_redis_keeps_one_bounded_expiring_hash_per_namespace(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    index = RedisVectorIndex(redis_client, key_prefix, max_entries=5)
    for number in range(12):
        await index.add("sem:m:u1", f"resp:m:u1:{number}", CONTEXT_A, unit(1, number, 0, 0), ttl_s=60)
    hash_key = f"{key_prefix}:sem:m:u1"
    fields = await redis_client.hgetall(hash_key)
    assert len(fields) == 5
    assert b"resp:m:u1:11" in fields
    assert all(len(value) == 16 + 4 * 4 for value in fields.values())
    assert 0 < await redis_client.pttl(hash_key) <= 60_000


@pytest.mark.redis
async def test_another_replica_sees_new_vectors_after_its_refresh(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    writer = RedisVectorIndex(redis_client, key_prefix, max_entries=100)
    reader = RedisVectorIndex(redis_client, key_prefix, max_entries=100, refresh_s=0.2)
    await writer.add("ns", "k1", CONTEXT_A, unit(1, 0, 0), ttl_s=60)
    first = await reader.nearest("ns", CONTEXT_A, unit(0, 1, 0))
    assert first is not None and first.key == "k1"
    await writer.add("ns", "k2", CONTEXT_A, unit(0, 1, 0), ttl_s=60)
    stale = await reader.nearest("ns", CONTEXT_A, unit(0, 1, 0))
    assert stale is not None and stale.key == "k1"  # the copy is younger than refresh_s
    await asyncio.sleep(0.3)
    fresh = await reader.nearest("ns", CONTEXT_A, unit(0, 1, 0))
    assert fresh is not None and fresh.key == "k2"


@pytest.mark.redis
async def test_rows_of_another_dimension_are_skipped_when_loading(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    index = RedisVectorIndex(redis_client, key_prefix, max_entries=100)
    await index.add("ns", "k1", CONTEXT_A, unit(1, 0, 0), ttl_s=60)
    await index.add("ns", "k2", CONTEXT_A, unit(0, 1, 0), ttl_s=60)
    await redis_client.hset(f"{key_prefix}:ns", "old", CONTEXT_A + unit(1, 0).tobytes())
    neighbour = await RedisVectorIndex(redis_client, key_prefix, max_entries=100).nearest(
        "ns", CONTEXT_A, unit(1, 0.1, 0)
    )
    assert neighbour is not None and neighbour.key == "k1"


async def test_unreachable_redis_index_finds_nothing_and_stores_nothing() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    index = RedisVectorIndex(client, "zigtest", max_entries=10, timeout_s=0.1)
    try:
        await index.add("ns", "k1", CONTEXT_A, unit(1, 0, 0), ttl_s=60)
        assert await index.nearest("ns", CONTEXT_A, unit(1, 0, 0)) is None
        await index.discard("ns", "k1")
    finally:
        await client.aclose()


def test_vector_sets_are_bounded_in_total() -> None:
    sets = VectorSets(max_entries=10, max_total_entries=4)
    for namespace in ("a", "b", "c"):
        sets.add(namespace, f"{namespace}1", CONTEXT_A, unit(1, 0))
        sets.add(namespace, f"{namespace}2", CONTEXT_A, unit(0, 1))
    assert sets.total == 4
    assert "a" not in sets and "b" in sets and "c" in sets
    sets.add("d", "d1", CONTEXT_A, unit(1, 1))
    assert sets.total == 3 and "b" not in sets


def test_a_vector_set_overwrites_its_oldest_slot_once_full() -> None:
    vectors = VectorSet(max_entries=2, dimensions=2)
    vectors.add("k1", CONTEXT_A, unit(1, 0))
    vectors.add("k2", CONTEXT_A, unit(0, 1))
    vectors.add("k1", CONTEXT_A, unit(1, 0.1))  # present: replaced in place
    assert len(vectors) == 2
    vectors.add("k3", CONTEXT_A, unit(1, 1))
    assert len(vectors) == 2
    neighbour = vectors.nearest(CONTEXT_A, unit(1, 0))
    assert neighbour is not None and neighbour.key == "k3"
    with pytest.raises(ValueError, match="vector of 2"):
        vectors.add("k4", CONTEXT_A, unit(1, 0, 0))


@pytest.fixture
async def semantic_cache(
    store: KeyValueStore, index: VectorIndex
) -> AsyncIterator[tuple[ResponseCache, FakeEmbedder]]:
    embedder = FakeEmbedder(EMBEDDINGS, dimensions=4)
    cache = ResponseCache(store, ttl_s=60, semantic=SemanticMatcher(embedder, index, threshold=0.9))
    await cache.start()
    assert embedder.is_started
    yield cache, embedder


async def test_a_reworded_question_hits(semantic_cache: tuple[ResponseCache, FakeEmbedder]) -> None:
    cache, embedder = semantic_cache
    assert await cache.lookup(request(FRANCE), scope="u1") is None
    await cache.store(request(FRANCE), scope="u1", text="Paris.", end=STOP)
    assert embedder.calls == [FRANCE]  # the lookup's embedding is reused by the store
    answer = await cache.lookup(request(FRANCE_REWORDED), scope="u1")
    assert answer is not None
    assert (answer.text, answer.usage, answer.match) == ("Paris.", STOP.usage, "semantic")
    assert answer.similarity == pytest.approx(0.95, abs=0.01)
    exact = await cache.lookup(request(FRANCE), scope="u1")
    assert exact is not None and exact.match == "exact"
    assert await cache.lookup(request(BREAD), scope="u1") is None
    assert (cache.hits, cache.semantic_hits, cache.misses) == (2, 1, 2)


async def test_only_the_last_user_message_is_matched_by_meaning(
    semantic_cache: tuple[ResponseCache, FakeEmbedder],
) -> None:
    cache, _ = semantic_cache
    await cache.store(request(FRANCE), scope="u1", text="Paris.", end=STOP)
    history = (ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"), ChatMessage("user", FRANCE))
    misses = [
        request(FRANCE_REWORDED, system="Answer in German."),
        request(FRANCE, system="Answer in German."),
        request(FRANCE_REWORDED, max_tokens=10),
        request(FRANCE_REWORDED, model="org/other"),
        dataclasses.replace(request(), messages=history),
    ]
    for other in misses:
        assert await cache.lookup(other, scope="u1") is None, other
    assert await cache.lookup(request(FRANCE_REWORDED), scope="u2") is None


async def test_a_vector_whose_answer_expired_is_dropped(
    semantic_cache: tuple[ResponseCache, FakeEmbedder], store: KeyValueStore
) -> None:
    cache, _ = semantic_cache
    await cache.store(request(FRANCE), scope="u1", text="Paris.", end=STOP)
    key = cache.key(request(FRANCE), scope="u1")
    answer = await store.get(key)
    assert answer is not None
    await store.delete(key)
    assert await cache.lookup(request(FRANCE_REWORDED), scope="u1") is None
    await store.set(key, answer, 60)  # the answer is back, its vector is not
    assert await cache.lookup(request(FRANCE_REWORDED), scope="u1") is None
    assert await cache.lookup(request(FRANCE), scope="u1") is not None


async def test_semantic_matching_against_an_unreachable_redis_is_a_miss() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    store = RedisKeyValueStore(client, "zigtest", timeout_s=0.1)
    index = RedisVectorIndex(client, "zigtest", max_entries=10, timeout_s=0.1)
    cache = ResponseCache(
        store, ttl_s=60, semantic=SemanticMatcher(FakeEmbedder(EMBEDDINGS, 4), index, threshold=0.9)
    )
    try:
        await cache.store(request(FRANCE), scope="u1", text="Paris.", end=STOP)
        assert await cache.lookup(request(FRANCE_REWORDED), scope="u1") is None
    finally:
        await client.aclose()


def test_the_threshold_is_a_cosine_similarity() -> None:
    index = MemoryVectorIndex(max_entries=1, max_total_entries=1)
    for threshold in (0.0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            SemanticMatcher(FakeEmbedder({}), index, threshold=threshold)
