"""The `x-ratelimit-*` headers: OpenAI's names and duration format, the tightest limit per family."""

from __future__ import annotations

import pytest

from tests.service.limits.conftest import bucket
from ziggurat.service.limits.headers import format_duration, rate_limit_headers, retry_after_ms
from ziggurat.service.limits.policy import BucketState


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.0121, "13ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360, "6m0s"),
        (7384, "2h3m4s"),
    ],
)
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_each_family_reports_its_tightest_limit() -> None:
    states = [
        BucketState(bucket("requests_per_minute", 10, scope="api_key"), 3, 20.0),
        BucketState(bucket("requests_per_minute", 60), 59, 1.0),
        BucketState(bucket("tokens_per_minute", 10_000), 9_000, 6.0),
        BucketState(bucket("daily_tokens", 50_000), 800, 3600.0),
        BucketState(bucket("concurrent_streams", 2), 1, 0.0),
    ]
    assert rate_limit_headers(states) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-limit-tokens": "50000",
        "x-ratelimit-remaining-tokens": "800",
        "x-ratelimit-reset-tokens": "1h0m0s",
    }


def test_a_family_without_limits_sends_nothing() -> None:
    assert rate_limit_headers([BucketState(bucket("concurrent_streams", 2), 1, 0.0)]) == {}
    only_requests = rate_limit_headers([BucketState(bucket("requests_per_minute", 5), 4, 12.0)])
    assert set(only_requests) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }


def test_retry_after_ms_rounds_up_and_is_never_zero() -> None:
    assert retry_after_ms(1.2345) == {"retry-after-ms": "1235"}
    assert retry_after_ms(0) == {"retry-after-ms": "1"}
