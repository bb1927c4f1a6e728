"""Which limits apply to a request, as buckets a limiter can check and charge in one step.

A `LimitSubject` (built by the application from the caller's role, its API key
and the operator's defaults) names the user, the API key, and the `Limits` of
each. `buckets_for` turns it into one `Bucket` per configured limit:

- `requests_per_minute`, `tokens_per_minute`: rates over a rolling minute
  (GCRA: the full minute's allowance may be used at once, then it refills
  evenly);
- `concurrent_streams`: slots held while a generation is read, each with a
  lease so a gateway that dies cannot hold them for ever;
- `daily_tokens`, `monthly_tokens`: counters per UTC day and month, keyed by
  the period's date, so a new period starts at zero without any reset job.

Token buckets are charged an estimate at admission (prompt tokens plus the
most the answer may use) and reconciled with the real usage when the
generation ends. A rate refuses a request whose estimate does not fit; a
quota admits while any of it is left (the last request may overshoot it by
its own size), because a `max_tokens` estimate would otherwise refuse most
requests near the end of a day. This module decides nothing and keeps no
state.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

LimitKind = Literal[
    "requests_per_minute", "tokens_per_minute", "concurrent_streams", "daily_tokens", "monthly_tokens"
]
Scope = Literal["user", "api_key"]

WINDOW_S = 60.0
"""The window of the per-minute rates."""
RATE_KINDS: frozenset[LimitKind] = frozenset({"requests_per_minute", "tokens_per_minute"})
QUOTA_KINDS: frozenset[LimitKind] = frozenset({"daily_tokens", "monthly_tokens"})
TOKEN_KINDS: frozenset[LimitKind] = frozenset({"tokens_per_minute", "daily_tokens", "monthly_tokens"})
CONCURRENCY_RETRY_S = 1.0
"""What a refused stream is told to wait: nobody knows when another stream of the user ends."""


@dataclass(slots=True, frozen=True)
class Limits:
    """One scope's limits; None means unlimited (0 refuses everything)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_streams: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return all(
            value is None
            for value in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.max_concurrent_streams,
                self.daily_tokens,
                self.monthly_tokens,
            )
        )

    @property
    def counts_tokens(self) -> bool:
        return any(
            value is not None for value in (self.tokens_per_minute, self.daily_tokens, self.monthly_tokens)
        )


@dataclass(slots=True, frozen=True)
class LimitSubject:
    """Whose request this is and the limits in force: the user's (from the role) and the API key's.

    Both scopes apply together: a request through an API key must fit the
    key's limits and its user's.
    """

    user_id: str
    role: str
    user_limits: Limits = field(default_factory=Limits)
    api_key_id: str | None = None
    api_key_limits: Limits = field(default_factory=Limits)

    @property
    def counts_tokens(self) -> bool:
        return self.user_limits.counts_tokens or (
            self.api_key_id is not None and self.api_key_limits.counts_tokens
        )


@dataclass(slots=True, frozen=True)
class Bucket:
    """One limit of one scope; `key` names its state (without the limiter's prefix)."""

    kind: LimitKind
    scope: Scope
    key: str
    limit: int
    period_end_s: float | None = None
    """For quotas: when the period ends (UTC epoch seconds); its state expires then."""

    def cost(self, tokens: int) -> int:
        return tokens if self.kind in TOKEN_KINDS else 1


class BucketState(NamedTuple):
    """What is left of a bucket after the decision, and how long until it is whole again.

    A named tuple, not a frozen dataclass: an admission makes two per bucket, and a
    frozen dataclass's `__init__` costs several times a tuple's.
    """

    bucket: Bucket
    remaining: int
    reset_s: float


@dataclass(slots=True, frozen=True)
class Decision:
    is_admitted: bool
    states: tuple[BucketState, ...] = ()
    """Empty when the limiter could not be asked (it failed open)."""
    refused: Bucket | None = None
    retry_after_s: float = 0.0
    is_too_large: bool = False
    """The request alone exceeds a per-minute rate: waiting will not help."""


def period_key(now_s: float) -> tuple[str, str]:
    """The UTC day and month of a clock reading: buckets built for one key hold for all its readings."""
    return day_period(now_s)[0], month_period(now_s)[0]


def buckets_for(subject: LimitSubject, *, now_s: float) -> tuple[Bucket, ...]:
    """Every bucket the subject's request must fit, API key first (its limits are usually tighter)."""
    user = f"{{u:{subject.user_id}}}"
    buckets: list[Bucket] = []
    if subject.api_key_id is not None:
        buckets += _scope_buckets(
            "api_key", f"{user}:key:{subject.api_key_id}", subject.api_key_limits, now_s
        )
    buckets += _scope_buckets("user", user, subject.user_limits, now_s)
    return tuple(buckets)


def _scope_buckets(scope: Scope, base: str, limits: Limits, now_s: float) -> list[Bucket]:
    # The user id in braces is a Redis Cluster hash tag: every key of one admission lives in one slot.
    buckets: list[Bucket] = []
    if limits.requests_per_minute is not None:
        buckets.append(Bucket("requests_per_minute", scope, f"{base}:rpm", limits.requests_per_minute))
    if limits.tokens_per_minute is not None:
        buckets.append(Bucket("tokens_per_minute", scope, f"{base}:tpm", limits.tokens_per_minute))
    if limits.max_concurrent_streams is not None:
        buckets.append(Bucket("concurrent_streams", scope, f"{base}:streams", limits.max_concurrent_streams))
    if limits.daily_tokens is not None:
        day, day_end = day_period(now_s)
        buckets.append(Bucket("daily_tokens", scope, f"{base}:day:{day}", limits.daily_tokens, day_end))
    if limits.monthly_tokens is not None:
        month, month_end = month_period(now_s)
        buckets.append(
            Bucket("monthly_tokens", scope, f"{base}:month:{month}", limits.monthly_tokens, month_end)
        )
    return buckets


class _PeriodMemo:
    """The last period a clock reading fell in: one comparison per request instead of calendar math.

    Periods change once a day or month, and every admission asks; a reading outside
    the remembered period (a new day, or a clock set back) computes it afresh.
    """

    __slots__ = ("_compute", "_last")

    def __init__(self, compute: Callable[[float], tuple[str, float, float]]) -> None:
        self._compute = compute
        self._last = ("", 0.0, 0.0)

    def __call__(self, now_s: float) -> tuple[str, float]:
        label, start, end = self._last
        if not start <= now_s < end:
            label, start, end = self._last = self._compute(now_s)
        return label, end


def _utc_day(now_s: float) -> tuple[str, float, float]:
    day = datetime.fromtimestamp(now_s, UTC).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return day.isoformat(), start.timestamp(), (start + timedelta(days=1)).timestamp()


def _utc_month(now_s: float) -> tuple[str, float, float]:
    moment = datetime.fromtimestamp(now_s, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    return f"{moment.year:04d}-{moment.month:02d}", start.timestamp(), end.timestamp()


day_period = _PeriodMemo(_utc_day)
"""The UTC date of a clock reading and when that day ends (epoch seconds)."""

month_period = _PeriodMemo(_utc_month)
"""The UTC month of a clock reading (`2026-11`) and when it ends (epoch seconds)."""


def charged_tokens(estimated_prompt: int, *, prompt: int, completion: int) -> int:
    """What a generation costs: its usage, with the prompt estimate where the engine did not count it.

    A job stopped or cut short reports no prompt tokens (or the reader left
    before the end), yet its prompt was processed once any text came back.
    """
    if prompt > 0:
        return prompt + completion
    return estimated_prompt + completion if completion > 0 else 0
