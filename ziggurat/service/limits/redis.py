"""The Redis rate limiter: exact across gateway replicas, one Lua script per admission.

`acquire.lua` checks every bucket of a request and charges all of them or
none, in one round trip, on the Redis server's clock (so gateways with
drifting clocks agree). Rate buckets are one key each (a theoretical arrival
time that expires when the bucket is full again), concurrency buckets a
sorted set of slots scored by their lease's end (a gateway that dies leaves
slots that lapse), quotas a counter per UTC day or month that expires after
its period. `settle.lua` reconciles tokens and renews or releases slots.

When Redis cannot be reached, requests are admitted (fail open) and a warning
is logged at most every `WARNING_INTERVAL_S`: a limiter outage must not become
a platform outage, and the engines' own queue bounds and load shedding still
protect the model servers. The cost is that limits are not enforced until
Redis answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ziggurat.service.limits.base import SlotAction
from ziggurat.service.limits.policy import (
    CONCURRENCY_RETRY_S,
    QUOTA_KINDS,
    Bucket,
    BucketState,
    Decision,
    LimitKind,
)
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

WARNING_INTERVAL_S = 30.0
_CODES: dict[LimitKind, str] = {
    "requests_per_minute": "rpm",
    "tokens_per_minute": "tpm",
    "concurrent_streams": "streams",
    "daily_tokens": "quota",
    "monthly_tokens": "quota",
}


@cache
def _script(name: str) -> str:
    return resources.files("ziggurat.service.limits").joinpath(f"{name}.lua").read_text()


class RedisRateLimiter:
    """`clock` (epoch seconds) replaces the Redis server's clock; for tests only."""

    settles_inline = False

    def __init__(self, client: Redis, *, prefix: str, clock: Callable[[], float] | None = None) -> None:
        self._prefix = prefix
        self._clock = clock
        self._acquire = client.register_script(_script("acquire"))
        self._settle = client.register_script(_script("settle"))
        self._warned_at = -WARNING_INTERVAL_S

    async def acquire(
        self, buckets: Sequence[Bucket], *, tokens: int, ticket: str, lease_s: float
    ) -> Decision:
        args: list[str | int | float] = [
            self._now_ms(),
            ticket,
            round(lease_s * 1000),
            tokens,
            round(CONCURRENCY_RETRY_S * 1000),
        ]
        for bucket in buckets:
            period_end_ms = round(bucket.period_end_s * 1000) if bucket.period_end_s is not None else 0
            args += [_CODES[bucket.kind], bucket.limit, period_end_ms]
        try:
            reply = await self._acquire(keys=self._keys(buckets), args=args)
        except (RedisError, OSError) as exc:
            self._warn("rate_limit_check_failed", exc)
            return Decision(is_admitted=True)
        values = [int(value) for value in reply]
        states = tuple(
            BucketState(bucket, values[4 + 2 * index], values[5 + 2 * index] / 1000)
            for index, bucket in enumerate(buckets)
        )
        if values[0]:
            return Decision(is_admitted=True, states=states)
        return Decision(
            is_admitted=False,
            states=states,
            refused=buckets[values[1] - 1],
            retry_after_s=values[2] / 1000,
            is_too_large=bool(values[3]),
        )

    async def settle(
        self,
        buckets: Sequence[Bucket],
        *,
        ticket: str,
        token_delta: int,
        slot: SlotAction,
        lease_s: float,
    ) -> None:
        involved = [
            bucket
            for bucket in buckets
            if bucket.kind == "concurrent_streams"
            or (token_delta and (bucket.kind == "tokens_per_minute" or bucket.kind in QUOTA_KINDS))
        ]
        if not involved or (not token_delta and slot == "keep"):
            return
        args: list[str | int | float] = [self._now_ms(), ticket, round(lease_s * 1000), token_delta, slot]
        for bucket in involved:
            args += [_CODES[bucket.kind], bucket.limit]
        try:
            await self._settle(keys=self._keys(involved), args=args)
        except (RedisError, OSError) as exc:
            # Tokens go uncounted; a slot not released lapses with its lease.
            self._warn("rate_limit_settle_failed", exc)

    def _keys(self, buckets: Sequence[Bucket]) -> list[str]:
        return [f"{self._prefix}:{bucket.key}" for bucket in buckets]

    def _now_ms(self) -> str:
        return "" if self._clock is None else f"{self._clock() * 1000:.3f}"

    def _warn(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARNING_INTERVAL_S:
            self._warned_at = now
            log.warning(event, error_type=type(exc).__name__, error=str(exc), fail_open=True)
