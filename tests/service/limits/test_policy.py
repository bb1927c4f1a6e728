"""From a subject to its buckets: scopes, keys, UTC periods; and what a generation is charged."""

from __future__ import annotations

from datetime import UTC, datetime

from ziggurat.service.limits.policy import (
    Limits,
    LimitSubject,
    buckets_for,
    charged_tokens,
    day_period,
    month_period,
)

NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp()


def test_an_unlimited_subject_has_no_buckets() -> None:
    assert buckets_for(LimitSubject("u1", "user"), now_s=NOW) == ()
    assert not LimitSubject("u1", "user").counts_tokens


def test_api_key_buckets_come_first_and_every_key_shares_the_users_hash_tag() -> None:
    subject = LimitSubject(
        "u1",
        "user",
        user_limits=Limits(
            requests_per_minute=60,
            tokens_per_minute=1000,
            max_concurrent_streams=2,
            daily_tokens=10_000,
            monthly_tokens=100_000,
        ),
        api_key_id="k1",
        api_key_limits=Limits(requests_per_minute=5),
    )
    buckets = buckets_for(subject, now_s=NOW)
    assert [(bucket.scope, bucket.kind, bucket.key, bucket.limit) for bucket in buckets] == [
        ("api_key", "requests_per_minute", "{u:u1}:key:k1:rpm", 5),
        ("user", "requests_per_minute", "{u:u1}:rpm", 60),
        ("user", "tokens_per_minute", "{u:u1}:tpm", 1000),
        ("user", "concurrent_streams", "{u:u1}:streams", 2),
        ("user", "daily_tokens", "{u:u1}:day:2026-12-31", 10_000),
        ("user", "monthly_tokens", "{u:u1}:month:2026-12", 100_000),
    ]
    assert buckets[4].period_end_s == buckets[5].period_end_s == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert subject.counts_tokens


def test_api_key_limits_apply_only_to_requests_through_a_key() -> None:
    subject = LimitSubject("u1", "user", api_key_limits=Limits(requests_per_minute=5))
    assert buckets_for(subject, now_s=NOW) == ()


def test_periods_are_utc_days_and_calendar_months() -> None:
    assert day_period(NOW + 30) == ("2027-01-01", datetime(2027, 1, 2, tzinfo=UTC).timestamp())
    february = datetime(2028, 2, 10, tzinfo=UTC).timestamp()
    assert month_period(february) == ("2028-02", datetime(2028, 3, 1, tzinfo=UTC).timestamp())


def test_a_generation_is_charged_its_usage_with_the_prompt_estimate_where_it_is_missing() -> None:
    assert charged_tokens(50, prompt=40, completion=10) == 50
    assert charged_tokens(50, prompt=0, completion=10) == 60  # stopped: the engine did not count the prompt
    assert charged_tokens(50, prompt=0, completion=0) == 0  # never ran


def test_remembered_periods_follow_the_clock_across_boundaries_and_backwards() -> None:
    last_second = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert day_period(last_second) == ("2027-01-31", last_second + 1)
    assert day_period(last_second + 1)[0] == "2027-02-01"  # the next day, not the remembered one
    assert month_period(last_second)[0] == "2027-01"
    assert month_period(last_second + 1)[0] == "2027-02"
    assert month_period(last_second)[0] == "2027-01"  # a clock set back gets its own month again
    assert day_period(last_second - 86_400)[0] == "2027-01-30"
