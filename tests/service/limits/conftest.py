"""Fixtures for the limiter tests: both implementations on a clock the test moves, and buckets.

The Redis limiter runs against the test server under a key prefix of its own
(every key under it is deleted when the test ends) and reads the test's
clock instead of the server's, so both implementations see the same time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from ziggurat.service.limits.base import RateLimiter
from ziggurat.service.limits.memory import MemoryRateLimiter
from ziggurat.service.limits.policy import Bucket, LimitKind, Scope


class FakeClock:
    """Epoch seconds that move only when the test says so (starting now: Redis expiries stay sane)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(Redis URL, key prefix), resolved outside the event loop (the URL fixture runs its own)."""
    return request.getfixturevalue("redis_server_url"), request.getfixturevalue("key_prefix")


@pytest.fixture
async def redis_client(redis_target: tuple[str, str]) -> AsyncIterator[redis.Redis]:
    url, prefix = redis_target
    client = redis.from_url(url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> RateLimiter:
    if request.param == "memory":
        return MemoryRateLimiter(clock=clock)
    from ziggurat.service.limits.redis import RedisRateLimiter

    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("key_prefix")
    return RedisRateLimiter(client, prefix=prefix, clock=clock)


def bucket(
    kind: LimitKind,
    limit: int,
    *,
    key: str | None = None,
    scope: Scope = "user",
    period_end_s: float | None = None,
) -> Bucket:
    return Bucket(kind, scope, key or f"{{u:1}}:{kind}", limit, period_end_s)
