"""`ResponseCache` on memory and Redis: what is cached, under which key, and who gets it back."""

import asyncio
import dataclasses

import pytest
import redis.asyncio as redis

from tests.connection.cache.conftest import STOP, MakeStore, request
from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore
from ziggurat.connection.cache.response import CachedAnswer, ResponseCache, is_cacheable
from ziggurat.model.engine import GenerationEnd, Usage


@pytest.fixture
def cache(store: KeyValueStore) -> ResponseCache:
    return ResponseCache(store, ttl_s=60)


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_cacheable(request(temperature=0.0))
    assert is_cacheable(request(temperature=0))
    assert is_cacheable(request(temperature=0.7, seed=42))
    assert is_cacheable(request(temperature=None, seed=0))
    assert not is_cacheable(request(temperature=0.7))
    assert not is_cacheable(request(temperature=None))
    assert not is_cacheable(dataclasses.replace(request(), continuation="Paris"))
    assert ResponseCache.is_cacheable(request())


async def test_an_exact_hit_returns_the_same_text_and_usage(cache: ResponseCache) -> None:
    assert await cache.lookup(request(), scope="u1") is None
    await cache.store(request(), scope="u1", text="Paris.", end=STOP)
    answer = await cache.lookup(request(), scope="u1")
    assert answer == CachedAnswer("Paris.", "stop", Usage(12, 5), match="exact", similarity=1.0)
    assert (cache.hits, cache.misses, cache.semantic_hits) == (1, 1, 0)


async def test_a_truncated_answer_is_stored_too(cache: ResponseCache) -> None:
    await cache.store(request(), scope="u1", text="Par", end=GenerationEnd("length", Usage(12, 64)))
    answer = await cache.lookup(request(), scope="u1")
    assert answer is not None
    assert (answer.text, answer.finish_reason) == ("Par", "length")


async def test_a_sampled_request_is_never_cached(cache: ResponseCache, store: KeyValueStore) -> None:
    sampled = request(temperature=0.7)
    await cache.store(sampled, scope="u1", text="Paris, probably.", end=STOP)
    assert await cache.lookup(sampled, scope="u1") is None
    assert await store.get(cache.key(sampled, scope="u1")) is None
    assert (cache.hits, cache.misses) == (0, 0)


async def test_a_continuation_is_never_cached(cache: ResponseCache) -> None:
    await cache.store(request(), scope="u1", text="Paris.", end=STOP)
    resumed = dataclasses.replace(request(), continuation="Par")
    assert await cache.lookup(resumed, scope="u1") is None
    await cache.store(resumed, scope="u2", text="is.", end=STOP)
    assert await cache.lookup(request(), scope="u2") is None


@pytest.mark.parametrize(
    "end",
    [
        GenerationEnd("error", Usage(12, 3), error="engine crashed"),
        GenerationEnd("cancelled", Usage(12, 3)),
        GenerationEnd("stop", Usage(12, 3), error="stopped by a failure"),
    ],
    ids=["error", "cancelled", "stop-with-error"],
)
async def test_unfinished_answers_are_not_stored(cache: ResponseCache, end: GenerationEnd) -> None:
    await cache.store(request(), scope="u1", text="Pa", end=end)
    assert await cache.lookup(request(), scope="u1") is None


async def test_another_scope_or_model_misses(cache: ResponseCache) -> None:
    await cache.store(request(), scope="u1", text="Paris.", end=STOP)
    assert await cache.lookup(request(), scope="u2") is None
    assert await cache.lookup(request(), scope="shared") is None
    assert await cache.lookup(request(model="org/other"), scope="u1") is None
    assert await cache.lookup(request(), scope="u1") is not None


async def test_surrounding_whitespace_does_not_matter_but_everything_else_does(cache: ResponseCache) -> None:
    await cache.store(request(stop=("\n", "END")), scope="u1", text="Paris.", end=STOP)
    assert await cache.lookup(request("  What is the capital of France?\n", stop=("\n", "END")), scope="u1")
    different = [
        request("What is the capital of france?", stop=("\n", "END")),
        request(stop=("END", "\n")),
        request(stop=("\n", "END"), max_tokens=65),
        request(stop=("\n", "END"), top_p=0.9),
        request(stop=("\n", "END"), seed=1),
        request(stop=("\n", "END"), system="Be verbose."),
    ]
    for other in different:
        assert await cache.lookup(other, scope="u1") is None, other


def test_keys_are_namespaced_by_model_and_scope() -> None:
    cache = ResponseCache(MemoryKeyValueStore(10), ttl_s=60)
    key = cache.key(request(model="m"), scope="u1")
    prefix, model, scope, digest = key.split(":")
    assert (prefix, model, scope, len(digest)) == ("resp", "m", "u1", 64)
    assert cache.key(request(model="m", temperature=0), scope="u1") == key
    assert cache.key(dataclasses.replace(request(model="m"), request_id="r2"), scope="u1") == key


async def test_answers_expire_with_the_ttl(make_store: MakeStore) -> None:
    cache = ResponseCache(make_store(), ttl_s=0.1)
    await cache.store(request(), scope="u1", text="Paris.", end=STOP)
    assert await cache.lookup(request(), scope="u1") is not None
    await asyncio.sleep(0.25)
    assert await cache.lookup(request(), scope="u1") is None


async def test_the_memory_cache_is_bounded() -> None:
    cache = ResponseCache(MemoryKeyValueStore(max_entries=2), ttl_s=60)
    for question in ("one?", "two?", "three?"):
        await cache.store(request(question), scope="u1", text=question.upper(), end=STOP)
    assert await cache.lookup(request("one?"), scope="u1") is None
    assert await cache.lookup(request("three?"), scope="u1") is not None


async def test_an_unreadable_entry_is_a_miss(cache: ResponseCache, store: KeyValueStore) -> None:
    await store.set(cache.key(request(), scope="u1"), b"not json", 60)
    assert await cache.lookup(request(), scope="u1") is None
    await store.set(cache.key(request(), scope="u1"), b'{"v": 99, "text": "?"}', 60)
    assert await cache.lookup(request(), scope="u1") is None


async def test_unreachable_redis_means_misses_and_skipped_stores() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    cache = ResponseCache(RedisKeyValueStore(client, "zigtest", timeout_s=0.1), ttl_s=60)
    try:
        await cache.store(request(), scope="u1", text="Paris.", end=STOP)
        assert await cache.lookup(request(), scope="u1") is None
        assert cache.misses == 1
    finally:
        await client.aclose()
