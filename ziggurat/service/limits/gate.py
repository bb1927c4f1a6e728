"""Admission against rate limits and quotas: admit a generation (a `LimitTicket`) or refuse it (429).

The estimate charged to token buckets is the prompt's tokens plus the most
the answer may use (`max_tokens`, else the engine default); the ticket
reconciles it with the real usage. A refusal raises `RateLimited` with the
wait until the refusing bucket admits again and the `x-ratelimit-*` headers,
counts `ziggurat_rate_limited_total{limit,scope}` and logs who was refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ziggurat.errors import RateLimited
from ziggurat.ids import new_id_hex
from ziggurat.service.limits.base import RateLimiter
from ziggurat.service.limits.headers import format_duration, rate_limit_headers, retry_after_ms
from ziggurat.service.limits.policy import Bucket, Decision, LimitSubject, buckets_for, period_key
from ziggurat.service.limits.ticket import LimitTicket
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_SCOPE_NAMES = {"user": "this user", "api_key": "this API key"}
_BUCKET_MEMO_ENTRIES = 10_000


class RateLimitGate:
    """`clock` (epoch seconds) decides the UTC day and month of quotas; replaceable for tests."""

    def __init__(
        self,
        limiter: RateLimiter,
        metrics: Metrics,
        *,
        stream_lease_s: float = 300.0,
        default_max_tokens: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limiter = limiter
        self._metrics = metrics
        self._lease_s = stream_lease_s
        self._default_max_tokens = default_max_tokens
        self._clock = clock
        self._bucket_memo: dict[tuple[LimitSubject, tuple[str, str]], tuple[Bucket, ...]] = {}

    def _buckets(self, subject: LimitSubject, now_s: float) -> tuple[Bucket, ...]:
        """`buckets_for`, remembered per subject and quota period (buckets are immutable).

        Building six buckets and their keys was most of an admission's own work. The memo
        forgets everything once it holds `_BUCKET_MEMO_ENTRIES` subjects.
        """
        key = (subject, period_key(now_s))
        buckets = self._bucket_memo.get(key)
        if buckets is None:
            if len(self._bucket_memo) >= _BUCKET_MEMO_ENTRIES:
                self._bucket_memo.clear()
            buckets = self._bucket_memo[key] = buckets_for(subject, now_s=now_s)
        return buckets

    async def admit(
        self, subject: LimitSubject, *, prompt_tokens: int, max_tokens: int | None
    ) -> LimitTicket | None:
        """Charge the subject's buckets for one generation; None when no limit applies."""
        buckets = self._buckets(subject, self._clock())
        if not buckets:
            return None
        estimate = prompt_tokens + (max_tokens or self._default_max_tokens) if subject.counts_tokens else 0
        ticket = new_id_hex()
        decision = await self._limiter.acquire(buckets, tokens=estimate, ticket=ticket, lease_s=self._lease_s)
        headers = rate_limit_headers(decision.states)
        if not decision.is_admitted:
            self._refuse(subject, decision, estimate, headers)
        return LimitTicket(
            limiter=self._limiter,
            buckets=buckets,
            ticket=ticket,
            estimate=estimate,
            prompt_estimate=prompt_tokens,
            headers=headers,
            lease_s=self._lease_s,
        )

    def _refuse(
        self, subject: LimitSubject, decision: Decision, estimate: int, headers: dict[str, str]
    ) -> None:
        refused = decision.refused
        assert refused is not None
        self._metrics.rate_limited.labels(refused.kind, refused.scope).inc()
        log.info(
            "rate_limited",
            limit=refused.kind,
            scope=refused.scope,
            user_id=subject.user_id,
            role=subject.role,
            api_key_id=subject.api_key_id,
            retry_after_s=round(decision.retry_after_s, 3),
        )
        raise RateLimited(
            refusal_message(refused, decision, estimate),
            retry_after_s=decision.retry_after_s,
            headers=headers | retry_after_ms(decision.retry_after_s),
        )


def refusal_message(bucket: Bucket, decision: Decision, estimate: int) -> str:
    who = _SCOPE_NAMES[bucket.scope]
    wait = format_duration(decision.retry_after_s)
    match bucket.kind:
        case "requests_per_minute":
            return f"Rate limit reached: {bucket.limit} requests per minute for {who}. Try again in {wait}."
        case "tokens_per_minute" if decision.is_too_large:
            return (
                f"Request too large: it may use up to {estimate} tokens (prompt and max_tokens), over "
                f"the limit of {bucket.limit} tokens per minute for {who}. "
                "Shorten the prompt or lower max_tokens."
            )
        case "tokens_per_minute":
            return (
                f"Rate limit reached: {bucket.limit} tokens per minute for {who} (this request may use up "
                f"to {estimate}). Try again in {wait}."
            )
        case "concurrent_streams":
            return (
                f"Too many generations at once: at most {bucket.limit} for {who}. "
                "Try again when one of them has finished."
            )
        case "daily_tokens":
            return (
                f"Daily token quota of {bucket.limit} used up for {who}; it renews at 00:00 UTC (in {wait})."
            )
        case "monthly_tokens":
            return (
                f"Monthly token quota of {bucket.limit} used up for {who}; it renews on the first of the "
                f"month, 00:00 UTC (in {wait})."
            )
    raise AssertionError(bucket.kind)
