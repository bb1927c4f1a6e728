"""The gate admits or refuses (429 with headers, a metric); its ticket settles the real usage."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import pytest

from tests.service.limits.conftest import FakeClock
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.errors import RateLimited
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage
from ziggurat.service.limits.base import SlotAction
from ziggurat.service.limits.gate import RateLimitGate
from ziggurat.service.limits.memory import MemoryRateLimiter
from ziggurat.service.limits.policy import Bucket, Decision, Limits, LimitSubject, day_period
from ziggurat.service.metrics import Metrics


class RecordingLimiter:
    """The memory limiter, recording every settle call (settled in a task, as Redis's would be)."""

    settles_inline = False

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryRateLimiter(clock=clock)
        self.settled: list[tuple[int, SlotAction]] = []

    async def acquire(
        self, buckets: Sequence[Bucket], *, tokens: int, ticket: str, lease_s: float
    ) -> Decision:
        return await self.inner.acquire(buckets, tokens=tokens, ticket=ticket, lease_s=lease_s)

    async def settle(
        self, buckets: Sequence[Bucket], *, ticket: str, token_delta: int, slot: SlotAction, lease_s: float
    ) -> None:
        self.settled.append((token_delta, slot))
        await self.inner.settle(buckets, ticket=ticket, token_delta=token_delta, slot=slot, lease_s=lease_s)


def subject(**limits: int) -> LimitSubject:
    return LimitSubject("u1", "user", user_limits=Limits(**limits))


@pytest.fixture
def limiter(clock: FakeClock) -> RecordingLimiter:
    return RecordingLimiter(clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def gate(limiter: RecordingLimiter, metrics: Metrics, clock: FakeClock) -> RateLimitGate:
    return RateLimitGate(limiter, metrics, stream_lease_s=300, default_max_tokens=100, clock=clock)


async def entries(*texts: str, usage: Usage | None) -> AsyncGenerator[StreamEntry, None]:
    for index, text in enumerate(texts):
        yield StreamEntry(f"0-{index}", TextDelta(text), tokens=1)
    if usage is not None:
        yield StreamEntry("0-99", GenerationEnd("stop", usage))


async def read_all(source: AsyncGenerator[StreamEntry, None]) -> None:
    async with aclosing(source) as stream:
        async for _ in stream:
            pass


async def test_no_limits_no_ticket(gate: RateLimitGate) -> None:
    assert await gate.admit(subject(), prompt_tokens=10, max_tokens=None) is None


async def test_a_refusal_is_a_429_with_the_wait_the_headers_and_a_metric(
    gate: RateLimitGate, metrics: Metrics
) -> None:
    limits = subject(requests_per_minute=2)
    first = await gate.admit(limits, prompt_tokens=0, max_tokens=None)
    assert first is not None and first.headers["x-ratelimit-remaining-requests"] == "1"
    await gate.admit(limits, prompt_tokens=0, max_tokens=None)

    with pytest.raises(RateLimited) as refused:
        await gate.admit(limits, prompt_tokens=0, max_tokens=None)
    assert refused.value.retry_after_s == pytest.approx(30)
    assert refused.value.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "retry-after-ms": "30000",
    }
    assert "2 requests per minute for this user" in refused.value.message
    assert metrics.rate_limited.labels("requests_per_minute", "user")._value.get() == 1


async def test_the_estimate_is_the_prompt_plus_max_tokens_or_the_default(gate: RateLimitGate) -> None:
    limits = subject(tokens_per_minute=1000)
    explicit = await gate.admit(limits, prompt_tokens=30, max_tokens=200)
    assert explicit is not None and explicit.estimate == 230
    default = await gate.admit(limits, prompt_tokens=30, max_tokens=None)
    assert default is not None and default.estimate == 130
    assert default.headers["x-ratelimit-remaining-tokens"] == str(1000 - 230 - 130)


async def test_a_request_larger_than_the_per_minute_rate_is_told_so(gate: RateLimitGate) -> None:
    with pytest.raises(RateLimited, match="Request too large: it may use up to 1100 tokens"):
        await gate.admit(subject(tokens_per_minute=1000), prompt_tokens=100, max_tokens=1000)


async def test_the_ticket_charges_the_real_usage_when_the_stream_ends(
    gate: RateLimitGate, limiter: RecordingLimiter
) -> None:
    limits = subject(tokens_per_minute=1000, max_concurrent_streams=1)
    ticket = await gate.admit(limits, prompt_tokens=30, max_tokens=200)
    assert ticket is not None
    with pytest.raises(RateLimited, match="at most 1 for this user"):
        await gate.admit(limits, prompt_tokens=30, max_tokens=200)

    await read_all(ticket.track(entries("a", "b", usage=Usage(30, 12))))
    assert limiter.settled == [(42 - 230, "release")]
    after = await gate.admit(limits, prompt_tokens=0, max_tokens=100)
    assert after is not None and after.headers["x-ratelimit-remaining-tokens"] == str(1000 - 42 - 100)


async def test_a_reader_that_leaves_early_is_charged_what_it_saw_and_frees_its_slot(
    gate: RateLimitGate, limiter: RecordingLimiter
) -> None:
    limits = subject(tokens_per_minute=1000, max_concurrent_streams=1)
    ticket = await gate.admit(limits, prompt_tokens=30, max_tokens=200)
    assert ticket is not None
    async with aclosing(ticket.track(entries("a", "b", "c", usage=Usage(30, 3)))) as stream:
        async for _ in stream:
            break
    assert limiter.settled == [(30 + 1 - 230, "release")]
    await ticket.settle()  # settling twice changes nothing
    assert len(limiter.settled) == 1
    assert await gate.admit(limits, prompt_tokens=0, max_tokens=None) is not None


async def test_an_abandoned_ticket_refunds_its_tokens_but_the_request_still_counts(
    gate: RateLimitGate, limiter: RecordingLimiter
) -> None:
    limits = subject(requests_per_minute=2, tokens_per_minute=1000)
    ticket = await gate.admit(limits, prompt_tokens=100, max_tokens=800)
    assert ticket is not None
    await ticket.abandon()
    assert limiter.settled == [(-900, "release")]
    again = await gate.admit(limits, prompt_tokens=100, max_tokens=800)
    assert again is not None
    assert again.headers["x-ratelimit-remaining-tokens"] == "100"
    assert again.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_long_stream_renews_its_slot(
    limiter: RecordingLimiter, metrics: Metrics, clock: FakeClock
) -> None:
    gate = RateLimitGate(limiter, metrics, stream_lease_s=0.0, clock=clock)  # due for renewal at every entry
    ticket = await gate.admit(subject(max_concurrent_streams=1), prompt_tokens=0, max_tokens=None)
    assert ticket is not None
    await read_all(ticket.track(entries("a", "b", usage=Usage(1, 2))))
    assert limiter.settled == [(0, "renew"), (0, "renew"), (0, "renew"), (0, "release")]


async def test_a_new_utc_day_gets_a_fresh_daily_quota_though_buckets_are_remembered(
    gate: RateLimitGate, clock: FakeClock
) -> None:
    quota = subject(daily_tokens=150)
    ticket = await gate.admit(quota, prompt_tokens=50, max_tokens=100)  # estimate 150: the whole day
    assert ticket is not None
    with pytest.raises(RateLimited, match="Daily token quota"):
        await gate.admit(quota, prompt_tokens=50, max_tokens=100)
    # A minute into the next UTC day, while yesterday's counter still lives (it outlives its day
    # by an hour so late settlements land): only the new day's buckets admit.
    _, day_end = day_period(clock.now)
    clock.now = day_end + 60
    assert await gate.admit(quota, prompt_tokens=50, max_tokens=100) is not None
