"""Brute-force protection for password sign-in: too many failures lock an account or a client IP.

Failures are counted per key (`account:<email>` and `ip:<address>`) in a
sliding window; once a key reaches its limit, sign-ins for it are refused
with `RateLimited` (429 + Retry-After) until its oldest failure in the window
expires, before the password is even checked. The account key is the
normalised email as typed, not the user id, so a locked response looks the
same whether the email exists or not. A successful sign-in clears the
account's count; the IP's count is left to decay, so an attacker who owns one
account cannot wipe the count of the addresses they guess from.

`LoginThrottle` is the interface; `MemoryLoginThrottle` keeps counts in this
process (bounded: the least recently failed keys are dropped first). Several
gateways need a shared implementation (Redis) to lock across replicas.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class ThrottleKey:
    """A counted key and the number of failures within the window that locks it."""

    name: str
    max_failures: int


class LoginThrottle(Protocol):
    async def retry_after(self, keys: Sequence[ThrottleKey]) -> float | None:
        """Seconds until the most constrained of `keys` unlocks, or None if none is locked."""
        ...

    async def record_failure(self, keys: Sequence[ThrottleKey]) -> None: ...

    async def reset(self, key: ThrottleKey) -> None: ...


class MemoryLoginThrottle:
    """Sliding-window failure counts in this process; one event loop, no locks."""

    def __init__(
        self, *, window_s: float, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    async def retry_after(self, keys: Sequence[ThrottleKey]) -> float | None:
        now = self._clock()
        waits: list[float] = []
        for key in keys:
            failures = self._recent(key.name, now)
            if len(failures) >= key.max_failures:
                # Unlocks when enough old failures leave the window to drop below the limit.
                unlock_at = failures[len(failures) - key.max_failures] + self._window_s
                waits.append(max(unlock_at - now, 0.001))
        return max(waits) if waits else None

    async def record_failure(self, keys: Sequence[ThrottleKey]) -> None:
        now = self._clock()
        for key in keys:
            failures = self._recent(key.name, now)
            failures.append(now)
            # Only the newest `max_failures` matter for the lock; keep memory per key bounded.
            while len(failures) > key.max_failures:
                failures.popleft()
            self._failures[key.name] = failures
            self._failures.move_to_end(key.name)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    async def reset(self, key: ThrottleKey) -> None:
        self._failures.pop(key.name, None)

    def _recent(self, name: str, now: float) -> deque[float]:
        failures = self._failures.get(name) or deque()
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(name, None)
        return failures
