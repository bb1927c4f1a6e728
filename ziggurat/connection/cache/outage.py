"""How the caches behave while Redis is unreachable: as if they were empty.

A cache is an optimisation, so its backend failing must never fail a request:
a read that fails is a miss, a write that fails is skipped. Every Redis call
runs under a short deadline (redis-py's own retries and socket timeouts can
add up to seconds), and the failure is logged as `cache_unavailable` at most
once per `interval_s`, so an outage does not flood the logs at request rate.
The first success afterwards logs `cache_available`. redis-py reconnects on
its own: a connection that failed is dropped from the pool and the next call
opens a fresh one, so nothing here retries or reconnects.

Only errors that a failing server causes are caught (`RedisError`, and
`OSError`, which includes the deadline's `TimeoutError`). Cancellation is
never caught.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from ziggurat.telemetry import get_logger

log = get_logger(__name__)

BACKEND_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)
"""What a Redis call raises when the server is down, slow, restarting or out of memory."""


class OutageLog:
    """Throttled warnings for one backend: call `failed` after each error, `succeeded` after each success."""

    __slots__ = ("_interval_s", "_is_down", "_last_warning_at", "_name", "_suppressed")

    def __init__(self, name: str, *, interval_s: float = 5.0) -> None:
        self._name = name
        self._interval_s = interval_s
        self._is_down = False
        self._last_warning_at = float("-inf")
        self._suppressed = 0

    @property
    def is_down(self) -> bool:
        """Whether the last call failed."""
        return self._is_down

    def failed(self, error: BaseException, *, operation: str) -> None:
        self._is_down = True
        now = time.monotonic()
        if now - self._last_warning_at < self._interval_s:
            self._suppressed += 1
            return
        log.warning(
            "cache_unavailable",
            cache=self._name,
            operation=operation,
            error_type=type(error).__name__,
            suppressed=self._suppressed,
        )
        self._last_warning_at = now
        self._suppressed = 0

    def succeeded(self) -> None:
        if self._is_down:
            self._is_down = False
            log.info("cache_available", cache=self._name)
