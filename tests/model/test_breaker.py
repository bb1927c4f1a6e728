"""CircuitBreaker: closed → open after K failures → half-open probe after the cool-down → closed or open."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ziggurat.model.breaker import BreakerState, CircuitBreaker


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    subject = breaker(Clock())
    subject.record_failure()
    subject.record_failure()
    subject.record_success()  # a success in between starts the count again
    subject.record_failure()
    subject.record_failure()
    assert subject.state is BreakerState.CLOSED and subject.try_acquire()
    subject.record_failure()
    assert subject.state is BreakerState.OPEN
    assert not subject.can_try and not subject.try_acquire()


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    subject = breaker(clock)
    for _ in range(3):
        subject.record_failure()
    clock.now += 9.9
    assert not subject.try_acquire()
    clock.now += 0.1
    assert subject.state is BreakerState.HALF_OPEN and subject.can_try
    assert subject.try_acquire()
    assert not subject.try_acquire() and not subject.can_try  # one probe at a time
    subject.record_success()
    assert subject.state is BreakerState.CLOSED
    assert subject.try_acquire() and subject.try_acquire()


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    clock = Clock()
    subject = breaker(clock)
    for _ in range(3):
        subject.record_failure()
    clock.now += 10
    assert subject.try_acquire()
    subject.record_failure()
    assert subject.state is BreakerState.OPEN and not subject.try_acquire()
    clock.now += 10
    assert subject.try_acquire()


def test_a_probe_without_a_verdict_is_given_back() -> None:
    clock = Clock()
    subject = breaker(clock)
    for _ in range(3):
        subject.record_failure()
    clock.now += 10
    assert subject.try_acquire()
    subject.release()
    assert subject.state is BreakerState.HALF_OPEN and subject.try_acquire()


def test_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, cooldown_s=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, cooldown_s=0)
