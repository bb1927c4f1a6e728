"""What only the Redis limiter does: the server's clock, keys that expire, failing open."""

from __future__ import annotations

import logging
import time

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.service.limits.conftest import bucket
from ziggurat.service.limits.policy import Bucket
from ziggurat.service.limits.redis import RedisRateLimiter

LEASE_S = 300.0


def every_kind(now_s: float) -> list[Bucket]:
    return [
        bucket("requests_per_minute", 5),
        bucket("tokens_per_minute", 1000),
        bucket("concurrent_streams", 2),
        bucket("daily_tokens", 1000, period_end_s=now_s + 3600),
    ]


@pytest.mark.redis
async def test_the_servers_clock_decides_and_every_key_expires(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=key_prefix)
    buckets = every_kind(time.time())
    decision = await limiter.acquire(buckets, tokens=100, ticket="a", lease_s=LEASE_S)
    assert decision.is_admitted
    assert [state.remaining for state in decision.states] == [4, 900, 1, 900]

    keys = [key async for key in redis_client.scan_iter(match=f"{key_prefix}:*")]
    assert len(keys) == 4
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= (3600 + 3600) * 1000

    await limiter.settle(buckets, ticket="a", token_delta=-100, slot="release", lease_s=LEASE_S)
    again = await limiter.acquire(buckets, tokens=1000, ticket="b", lease_s=LEASE_S)
    assert [state.remaining for state in again.states] == [3, 0, 1, 0]


async def test_an_unreachable_redis_admits_and_warns_once_in_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    limiter = RedisRateLimiter(client, prefix="unreachable")
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                decision = await limiter.acquire(
                    every_kind(time.time()), tokens=10, ticket="a", lease_s=LEASE_S
                )
                assert decision.is_admitted and decision.states == ()
            await limiter.settle(
                every_kind(time.time()), ticket="a", token_delta=5, slot="release", lease_s=LEASE_S
            )
    finally:
        await client.aclose()
    warnings = [record for record in caplog.records if "rate_limit" in record.getMessage()]
    assert len(warnings) == 1
