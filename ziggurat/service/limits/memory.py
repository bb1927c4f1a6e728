"""The in-process rate limiter: exact within one process, the zero-setup default.

State is three dictionaries (a theoretical arrival time per rate bucket, a
counter per quota period, leased slots per concurrency bucket). Every method
runs without awaiting, so one admission is atomic on the event loop. Entries
that can no longer matter (full rates, past periods, expired slots) are swept
once a minute, so memory follows the active users, not all users ever seen.
The rules are those of `acquire.lua` and `settle.lua`, which the contract tests hold both to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ziggurat.service.limits.base import SlotAction
from ziggurat.service.limits.policy import (
    CONCURRENCY_RETRY_S,
    QUOTA_KINDS,
    RATE_KINDS,
    WINDOW_S,
    Bucket,
    BucketState,
    Decision,
)

QUOTA_GRACE_S = 3600.0
"""A period's counter outlives its period by this, so a generation ending after midnight still settles."""
_SWEEP_INTERVAL_S = 60.0
_EPSILON_S = 1e-6


class _Check(NamedTuple):
    """A bucket's state now and, when it would admit, after the request is charged."""

    now: BucketState
    after: BucketState | None
    retry_after_s: float = 0.0
    is_too_large: bool = False


class MemoryRateLimiter:
    settles_inline = True
    """Every method runs without awaiting (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._arrivals: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._earliest_end: dict[str, float] = {}
        """Per key, no slot lease ends before this (it may be earlier than the truth, never later)."""
        self._swept_at = 0.0

    async def acquire(
        self, buckets: Sequence[Bucket], *, tokens: int, ticket: str, lease_s: float
    ) -> Decision:
        now = self._clock()
        self._sweep(now)
        checks = [self._check(bucket, bucket.cost(tokens), now) for bucket in buckets]
        refusals = [check for check in checks if check.after is None]
        if refusals:
            worst = max(refusals, key=lambda check: (check.is_too_large, check.retry_after_s))
            return Decision(
                is_admitted=False,
                states=tuple(check.now for check in checks),
                refused=worst.now.bucket,
                retry_after_s=worst.retry_after_s,
                is_too_large=worst.is_too_large,
            )
        for bucket in buckets:
            self._charge(bucket, bucket.cost(tokens), now, ticket, lease_s)
        return Decision(is_admitted=True, states=tuple(check.after for check in checks if check.after))

    async def settle(
        self,
        buckets: Sequence[Bucket],
        *,
        ticket: str,
        token_delta: int,
        slot: SlotAction,
        lease_s: float,
    ) -> None:
        now = self._clock()
        for bucket in buckets:
            if bucket.kind == "concurrent_streams":
                slots = self._slots.get(bucket.key)
                if slots is None or slots.get(ticket, now) <= now:
                    continue
                if slot == "release":
                    del slots[ticket]
                elif slot == "renew":
                    slots[ticket] = now + lease_s
            elif token_delta and bucket.kind == "tokens_per_minute" and bucket.limit > 0:
                start = self._arrivals.get(bucket.key, now)
                if token_delta > 0:  # a debt starts from now; a refund never fills a bucket past full
                    start = max(start, now)
                arrival = start + token_delta * WINDOW_S / bucket.limit
                if arrival <= now:
                    self._arrivals.pop(bucket.key, None)
                else:
                    self._arrivals[bucket.key] = arrival
            elif token_delta and bucket.kind in QUOTA_KINDS:
                counter = self._counters.get(bucket.key)
                if counter is not None and counter[1] > now:
                    self._counters[bucket.key] = (max(counter[0] + token_delta, 0), counter[1])

    def _check(self, bucket: Bucket, cost: int, now: float) -> _Check:
        if bucket.kind in RATE_KINDS:
            return _rate_check(bucket, self._arrivals.get(bucket.key), cost, now)
        if bucket.kind == "concurrent_streams":
            held = self._held(bucket.key, now)
            current = BucketState(bucket, max(bucket.limit - held, 0), 0.0)
            if held < bucket.limit:
                return _Check(current, BucketState(bucket, bucket.limit - held - 1, 0.0))
            return _Check(current, None, CONCURRENCY_RETRY_S)
        counter = self._counters.get(bucket.key)
        used = counter[0] if counter is not None and counter[1] > now else 0
        reset_s = max((bucket.period_end_s or now) - now, 0.0)
        current = BucketState(bucket, max(bucket.limit - used, 0), reset_s)
        if used < bucket.limit:
            return _Check(current, BucketState(bucket, max(bucket.limit - used - cost, 0), reset_s))
        return _Check(current, None, reset_s)

    def _charge(self, bucket: Bucket, cost: int, now: float, ticket: str, lease_s: float) -> None:
        if bucket.kind in RATE_KINDS:
            start = max(self._arrivals.get(bucket.key, now), now)
            self._arrivals[bucket.key] = start + cost * WINDOW_S / bucket.limit
        elif bucket.kind == "concurrent_streams":
            self._slots.setdefault(bucket.key, {})[ticket] = now + lease_s
            self._earliest_end[bucket.key] = min(self._earliest_end.get(bucket.key, math.inf), now + lease_s)
        else:
            counter = self._counters.get(bucket.key)
            used = counter[0] if counter is not None and counter[1] > now else 0
            expires_at = (bucket.period_end_s or now) + QUOTA_GRACE_S
            self._counters[bucket.key] = (used + cost, expires_at)

    def _held(self, key: str, now: float) -> int:
        """Live slots of `key`: a count, not a scan, until some lease may have run out.

        A busy API key holds hundreds of streams; scanning them on every request made
        admission quadratic in its concurrency.
        """
        slots = self._slots.get(key)
        if not slots:
            return 0
        if self._earliest_end.get(key, 0.0) <= now:
            live = {ticket: end for ticket, end in slots.items() if end > now}
            self._slots[key] = slots = live
            self._earliest_end[key] = min(live.values(), default=math.inf)
        return len(slots)

    def _sweep(self, now: float) -> None:
        if now - self._swept_at < _SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        self._arrivals = {key: at for key, at in self._arrivals.items() if at > now}
        self._counters = {key: counter for key, counter in self._counters.items() if counter[1] > now}
        for key in list(self._slots):
            live = {ticket: end for ticket, end in self._slots[key].items() if end > now}
            if live:
                self._slots[key] = live
                self._earliest_end[key] = min(live.values())
            else:
                del self._slots[key]
                self._earliest_end.pop(key, None)


def _rate_check(bucket: Bucket, arrival: float | None, cost: int, now: float) -> _Check:
    """GCRA: admit when the theoretical arrival time after this request is at most a window ahead."""
    if bucket.limit <= 0:
        return _Check(BucketState(bucket, 0, WINDOW_S), None, WINDOW_S)
    interval = WINDOW_S / bucket.limit
    start = max(arrival if arrival is not None else now, now)
    after = start + cost * interval
    current = BucketState(bucket, _left(start - now, interval), start - now)
    if after - now <= WINDOW_S + _EPSILON_S:
        return _Check(current, BucketState(bucket, _left(after - now, interval), after - now))
    return _Check(current, None, after - WINDOW_S - now, is_too_large=cost * interval > WINDOW_S)


def _left(ahead_s: float, interval_s: float) -> int:
    """What a rate bucket whose arrival time is `ahead_s` in the future still admits."""
    return max(math.floor((WINDOW_S - ahead_s) / interval_s + _EPSILON_S), 0)
