"""Behaviour every `RateLimiter` shares, on memory and on Redis, with a clock the test moves."""

from __future__ import annotations

import pytest

from tests.service.limits.conftest import FakeClock, bucket
from ziggurat.service.limits.base import RateLimiter
from ziggurat.service.limits.policy import Bucket, Decision, LimitKind

LEASE_S = 300.0


async def acquire(limiter: RateLimiter, *buckets: Bucket, tokens: int = 0, ticket: str = "t") -> Decision:
    return await limiter.acquire(buckets, tokens=tokens, ticket=ticket, lease_s=LEASE_S)


def remaining(decision: Decision) -> list[int]:
    return [state.remaining for state in decision.states]


async def test_requests_per_minute_admit_the_whole_minute_at_once_then_refill_evenly(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    rpm = bucket("requests_per_minute", 3)
    decisions = [await acquire(limiter, rpm) for _ in range(3)]
    assert [decision.is_admitted for decision in decisions] == [True, True, True]
    assert [remaining(decision) for decision in decisions] == [[2], [1], [0]]
    assert decisions[-1].states[0].reset_s == pytest.approx(60.0)

    refused = await acquire(limiter, rpm)
    assert not refused.is_admitted and refused.refused == rpm and not refused.is_too_large
    assert refused.retry_after_s == pytest.approx(20.0)
    assert remaining(refused) == [0]

    clock.advance(19.9)
    assert not (await acquire(limiter, rpm)).is_admitted
    clock.advance(0.1)
    admitted = await acquire(limiter, rpm)
    assert admitted.is_admitted and remaining(admitted) == [0]


async def test_tokens_per_minute_charge_the_estimate_and_refuse_what_cannot_fit(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    tpm = bucket("tokens_per_minute", 1000)
    assert remaining(await acquire(limiter, tpm, tokens=400)) == [600]
    assert remaining(await acquire(limiter, tpm, tokens=400)) == [200]

    refused = await acquire(limiter, tpm, tokens=400)
    assert not refused.is_admitted and not refused.is_too_large
    assert refused.retry_after_s == pytest.approx(12.0)
    assert remaining(refused) == [200]

    too_large = await acquire(limiter, tpm, tokens=1001)
    assert not too_large.is_admitted and too_large.is_too_large


async def test_settling_refunds_or_charges_the_difference_from_the_estimate(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    tpm = bucket("tokens_per_minute", 1000)
    await acquire(limiter, tpm, tokens=800)
    await limiter.settle([tpm], ticket="t", token_delta=-700, slot="release", lease_s=LEASE_S)
    assert remaining(await acquire(limiter, tpm, tokens=900)) == [0]

    await limiter.settle([tpm], ticket="t", token_delta=500, slot="release", lease_s=LEASE_S)
    refused = await acquire(limiter, tpm, tokens=1)
    assert not refused.is_admitted and refused.retry_after_s == pytest.approx(30.06)


async def test_a_refund_never_fills_a_bucket_past_full(limiter: RateLimiter, clock: FakeClock) -> None:
    tpm = bucket("tokens_per_minute", 1000)
    await acquire(limiter, tpm, tokens=100)
    clock.advance(60)
    await limiter.settle([tpm], ticket="t", token_delta=-100, slot="release", lease_s=LEASE_S)
    assert remaining(await acquire(limiter, tpm, tokens=1000)) == [0]
    assert not (await acquire(limiter, tpm, tokens=1)).is_admitted


async def test_concurrent_streams_hold_a_slot_until_released(limiter: RateLimiter, clock: FakeClock) -> None:
    streams = bucket("concurrent_streams", 2)
    assert remaining(await acquire(limiter, streams, ticket="a")) == [1]
    assert remaining(await acquire(limiter, streams, ticket="b")) == [0]
    refused = await acquire(limiter, streams, ticket="c")
    assert not refused.is_admitted and refused.retry_after_s == pytest.approx(1.0)

    await limiter.settle([streams], ticket="a", token_delta=0, slot="release", lease_s=LEASE_S)
    assert (await acquire(limiter, streams, ticket="c")).is_admitted


async def test_a_slot_whose_holder_stops_renewing_lapses_with_its_lease(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    streams = bucket("concurrent_streams", 1)
    await acquire(limiter, streams, ticket="a")
    clock.advance(LEASE_S - 1)
    await limiter.settle([streams], ticket="a", token_delta=0, slot="renew", lease_s=LEASE_S)
    clock.advance(LEASE_S - 1)
    assert not (await acquire(limiter, streams, ticket="b")).is_admitted  # renewed: still held

    clock.advance(2)
    assert (await acquire(limiter, streams, ticket="b")).is_admitted  # the holder died: lapsed
    await limiter.settle([streams], ticket="a", token_delta=0, slot="renew", lease_s=LEASE_S)
    assert not (await acquire(limiter, streams, ticket="c")).is_admitted  # a lapsed slot is not revived


async def test_a_quota_admits_while_any_is_left_and_reopens_with_the_next_period(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    day_end = clock.now + 3600
    daily = bucket("daily_tokens", 100, key="{u:1}:day:1", period_end_s=day_end)
    first = await acquire(limiter, daily, tokens=60)
    assert first.is_admitted and remaining(first) == [40]
    assert first.states[0].reset_s == pytest.approx(3600)
    assert (await acquire(limiter, daily, tokens=60)).is_admitted  # 60 used < 100: may overshoot

    refused = await acquire(limiter, daily, tokens=1)
    assert not refused.is_admitted and refused.refused == daily
    assert refused.retry_after_s == pytest.approx(3600) and remaining(refused) == [0]

    await limiter.settle([daily], ticket="t", token_delta=-50, slot="release", lease_s=LEASE_S)
    assert remaining(await acquire(limiter, daily, tokens=20)) == [10]

    next_day = bucket("daily_tokens", 100, key="{u:1}:day:2", period_end_s=day_end + 86400)
    clock.advance(3600)
    assert remaining(await acquire(limiter, next_day, tokens=30)) == [70]


async def test_admission_is_all_or_nothing(limiter: RateLimiter, clock: FakeClock) -> None:
    rpm = bucket("requests_per_minute", 10)
    streams = bucket("concurrent_streams", 1)
    quota = bucket("monthly_tokens", 50, key="{u:1}:month:1", period_end_s=clock.now + 3600)
    assert (await acquire(limiter, rpm, streams, quota, tokens=60, ticket="a")).is_admitted

    refused = await acquire(limiter, rpm, streams, quota, tokens=10, ticket="b")
    assert not refused.is_admitted
    assert refused.refused == quota  # the longest wait is reported (the month, not the stream slot)
    assert remaining(refused) == [9, 0, 0]

    await limiter.settle([rpm, streams, quota], ticket="a", token_delta=-40, slot="release", lease_s=LEASE_S)
    admitted = await acquire(limiter, rpm, streams, quota, tokens=10, ticket="c")
    assert admitted.is_admitted and remaining(admitted) == [8, 0, 20]  # the refusal charged nothing


async def test_a_limit_of_zero_refuses_everything(limiter: RateLimiter, clock: FakeClock) -> None:
    kinds: tuple[LimitKind, ...] = ("requests_per_minute", "tokens_per_minute", "concurrent_streams")
    for kind in kinds:
        assert not (await acquire(limiter, bucket(kind, 0), tokens=1)).is_admitted
    quota = bucket("daily_tokens", 0, period_end_s=clock.now + 60)
    assert not (await acquire(limiter, quota, tokens=1)).is_admitted


async def test_scopes_are_counted_apart(limiter: RateLimiter, clock: FakeClock) -> None:
    key_rpm = bucket("requests_per_minute", 1, key="{u:1}:key:k1:rpm", scope="api_key")
    other_key_rpm = bucket("requests_per_minute", 1, key="{u:1}:key:k2:rpm", scope="api_key")
    user_rpm = bucket("requests_per_minute", 5, key="{u:1}:rpm")
    assert (await acquire(limiter, key_rpm, user_rpm)).is_admitted
    refused = await acquire(limiter, key_rpm, user_rpm)
    assert not refused.is_admitted and refused.refused == key_rpm
    assert (await acquire(limiter, other_key_rpm, user_rpm)).is_admitted
    assert remaining(await acquire(limiter, user_rpm)) == [2]


async def test_staggered_leases_lapse_one_by_one(limiter: RateLimiter, clock: FakeClock) -> None:
    streams = bucket("concurrent_streams", 3)
    for ticket in "abc":
        assert (await acquire(limiter, streams, ticket=ticket)).is_admitted
        clock.advance(10)
    assert not (await acquire(limiter, streams, ticket="d")).is_admitted
    clock.advance(LEASE_S - 25)  # a's lease (taken 30 s ago) ran out 5 s ago; b and c still hold
    assert remaining(await acquire(limiter, streams, ticket="d")) == [0]
    assert not (await acquire(limiter, streams, ticket="e")).is_admitted
    await limiter.settle([streams], ticket="c", token_delta=0, slot="release", lease_s=LEASE_S)
    assert (await acquire(limiter, streams, ticket="e")).is_admitted
