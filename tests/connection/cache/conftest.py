"""Fixtures for the cache tests: each backend, a Redis client that cleans up, and a store factory.

The Redis variants use the test server with a key prefix of their own; every key
under it is deleted (SCAN) when the test ends.
"""

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as redis

from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams, Usage

MakeStore = Callable[..., KeyValueStore]

REAL_REDIS_TIMEOUT_S = 5.0
"""Deadline for stores whose test expects Redis to answer: the 0.5 s default fails on a loaded CI runner."""

STOP = GenerationEnd("stop", Usage(prompt_tokens=12, completion_tokens=5))


def request(
    question: str = "What is the capital of France?",
    *,
    model: str = "org/model:7b",
    system: str = "Be brief.",
    temperature: float | None = 0.0,
    max_tokens: int | None = 64,
    top_p: float | None = None,
    stop: tuple[str, ...] = (),
    seed: int | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        request_id="r1",
        model=model,
        messages=(ChatMessage("system", system), ChatMessage("user", question)),
        params=SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed
        ),
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(Redis URL, key prefix), resolved outside the event loop (the URL fixture runs its own)."""
    return request.getfixturevalue("redis_server_url"), request.getfixturevalue("key_prefix")


async def delete_keys(client: redis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def redis_client(redis_target: tuple[str, str]) -> AsyncIterator[redis.Redis]:
    url, prefix = redis_target
    client = redis.from_url(url)
    try:
        yield client
    finally:
        await delete_keys(client, prefix)
        await client.aclose()


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest) -> MakeStore:
    """`make_store(max_entries=...)`: a fresh store on this test's backend (Redis ignores the bound)."""
    if backend == "memory":
        return lambda max_entries=1000: MemoryKeyValueStore(max_entries)
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("key_prefix")
    return lambda max_entries=1000: RedisKeyValueStore(client, prefix, timeout_s=REAL_REDIS_TIMEOUT_S)


@pytest.fixture
def store(make_store: MakeStore) -> KeyValueStore:
    return make_store()
