"""Readiness checks: a failing or hung dependency reads as "not ready", never as an error or a hang."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from ziggurat.service.health import HealthService


async def test_each_check_is_reported_and_failures_read_as_not_ready() -> None:
    async def ready() -> bool:
        return True

    async def hung() -> bool:
        await asyncio.Event().wait()
        return True

    async def broken() -> bool:
        raise RedisConnectionError("connection refused")

    health = HealthService(timeout_s=0.05)
    for name, check in (("database", ready), ("broker", hung), ("streams", broken)):
        health.add_check(name, check)
    assert await health.readiness() == {"database": True, "broker": False, "streams": False}
