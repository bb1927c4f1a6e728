"""The in-memory login throttle: sliding windows, per-key limits, reset, bounded memory."""

from __future__ import annotations

from tests.application.auth.test_credential_cache import FakeClock
from ziggurat.application.auth.lockout import MemoryLoginThrottle, ThrottleKey

ACCOUNT = ThrottleKey("account:a@example.com", 3)
IP = ThrottleKey("ip:10.0.0.1", 5)


async def test_a_key_locks_at_its_limit_and_unlocks_when_failures_leave_the_window() -> None:
    clock = FakeClock()
    throttle = MemoryLoginThrottle(window_s=60, clock=clock)
    for _ in range(2):
        await throttle.record_failure([ACCOUNT, IP])
        clock.now += 10
    assert await throttle.retry_after([ACCOUNT, IP]) is None
    await throttle.record_failure([ACCOUNT, IP])
    assert await throttle.retry_after([ACCOUNT, IP]) == 40  # the first failure leaves at t=160
    clock.now += 40
    assert await throttle.retry_after([ACCOUNT, IP]) is None


async def test_reset_clears_one_key_only() -> None:
    throttle = MemoryLoginThrottle(window_s=60, clock=FakeClock())
    for _ in range(5):
        await throttle.record_failure([ACCOUNT, IP])
    await throttle.reset(ACCOUNT)
    assert await throttle.retry_after([ACCOUNT]) is None
    assert await throttle.retry_after([IP]) is not None


async def test_memory_stays_bounded() -> None:
    throttle = MemoryLoginThrottle(window_s=60, max_keys=10, clock=FakeClock())
    for index in range(100):
        for _ in range(3):
            await throttle.record_failure([ThrottleKey(f"ip:{index}", 3)])
    assert await throttle.retry_after([ThrottleKey("ip:99", 3)]) is not None
    assert await throttle.retry_after([ThrottleKey("ip:0", 3)]) is None
