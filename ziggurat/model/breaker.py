"""A circuit breaker for one remote endpoint: stop sending requests to a server that keeps failing.

closed (requests go) → open after `failure_threshold` consecutive failures
(requests are refused at once, so they go elsewhere instead of waiting on a
dead server) → after `cooldown_s`, half-open: one request goes through as a
probe → closed when it succeeds, open again (for another cool-down) when it
fails. The caller decides what a failure is (connect errors, 5xx, timeouts)
and reports each request's verdict; a request that ends without one (its
client left) gives its probe back with `release`.

Not thread-safe: one event loop owns it. It does no I/O and has no timers:
the state is computed from the clock when asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures; `try_acquire` says whether a request may go now."""

    __slots__ = ("_clock", "_cooldown_s", "_failure_threshold", "_failures", "_opened_at", "_probing")

    def __init__(
        self, *, failure_threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("a circuit breaker needs failure_threshold >= 1 and cooldown_s > 0")
        self._failure_threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self._cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def can_try(self) -> bool:
        """Whether `try_acquire` would let a request through now (it changes nothing)."""
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probing)

    def try_acquire(self) -> bool:
        """Let a request through: always while closed, one probe at a time while half-open."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        if self._opened_at is not None:
            # A probe failed (or a request sent before the breaker opened): another full cool-down.
            self._opened_at = self._clock()
            self._probing = False
            return
        self._failures += 1
        if self._failures >= self._failure_threshold:
            self._opened_at = self._clock()

    def release(self) -> None:
        """A request that ended without a verdict: a probe it held may be taken by the next request."""
        self._probing = False
