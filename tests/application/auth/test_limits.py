"""The limits a principal is held to: its role's, else the operator's defaults, plus its API key's."""

from __future__ import annotations

from ziggurat.application.auth.limits import LimitPolicy
from ziggurat.application.auth.principal import SCOPE_CHAT, Principal, Quota, UserId
from ziggurat.config import LimitSettings
from ziggurat.service.limits.policy import Limits

DEFAULTS = LimitSettings(
    requests_per_minute=60,
    daily_tokens=100_000,
    api_key_requests_per_minute=10,
    api_key_max_concurrent_streams=2,
)


NO_QUOTA = Quota()


def principal(quota: Quota = NO_QUOTA, api_key_id: str | None = None) -> Principal:
    return Principal(
        user_id=UserId("u1"), role="user", scopes=frozenset({SCOPE_CHAT}), api_key_id=api_key_id, quota=quota
    )


def test_nothing_configured_means_no_subject() -> None:
    assert LimitPolicy(LimitSettings()).subject_for(principal(api_key_id="k1")) is None


def test_the_roles_own_limits_win_and_the_defaults_fill_the_rest() -> None:
    subject = LimitPolicy(DEFAULTS).subject_for(principal(Quota(requests_per_minute=5, monthly_tokens=9)))
    assert subject is not None
    assert subject.user_limits == Limits(requests_per_minute=5, daily_tokens=100_000, monthly_tokens=9)
    assert subject.api_key_id is None and subject.api_key_limits == Limits()


def test_a_role_can_set_zero_to_allow_none() -> None:
    subject = LimitPolicy(DEFAULTS).subject_for(principal(Quota(daily_tokens=0)))
    assert subject is not None and subject.user_limits.daily_tokens == 0


def test_requests_through_an_api_key_also_meet_the_keys_limits() -> None:
    subject = LimitPolicy(DEFAULTS).subject_for(principal(api_key_id="k1"))
    assert subject is not None and subject.api_key_id == "k1"
    assert subject.api_key_limits == Limits(requests_per_minute=10, max_concurrent_streams=2)
    only_keys = LimitPolicy(LimitSettings(api_key_tokens_per_minute=100))
    assert only_keys.subject_for(principal()) is None
    assert only_keys.subject_for(principal(api_key_id="k1")) is not None
