"""The limits a principal's requests are held to: its role's quota, the operator's defaults, its API key's.

A role's own values win; a limit the role leaves unset (None) takes the
default from `LimitSettings`, which is unlimited unless the operator sets
one. Requests through an API key are held to the `api_key_*` settings as
well, per key. `subject_for` is what chat and `/v1` hand to
`GenerationService.submit`; it is None when nothing limits the principal, so
unlimited users cost no limiter round trip.
"""

from __future__ import annotations

from ziggurat.application.auth.principal import Principal
from ziggurat.config import LimitSettings
from ziggurat.service.limits.policy import Limits, LimitSubject


class LimitPolicy:
    def __init__(self, settings: LimitSettings) -> None:
        self._defaults = settings
        self._api_key = Limits(
            requests_per_minute=settings.api_key_requests_per_minute,
            tokens_per_minute=settings.api_key_tokens_per_minute,
            max_concurrent_streams=settings.api_key_max_concurrent_streams,
        )

    def limits_of(self, principal: Principal) -> Limits:
        """The per-user limits in force for `principal`: its role's, else the defaults."""
        quota, defaults = principal.quota, self._defaults
        return Limits(
            requests_per_minute=_first_set(quota.requests_per_minute, defaults.requests_per_minute),
            tokens_per_minute=_first_set(quota.tokens_per_minute, defaults.tokens_per_minute),
            max_concurrent_streams=_first_set(quota.max_concurrent_streams, defaults.max_concurrent_streams),
            daily_tokens=_first_set(quota.daily_tokens, defaults.daily_tokens),
            monthly_tokens=_first_set(quota.monthly_tokens, defaults.monthly_tokens),
        )

    def subject_for(self, principal: Principal) -> LimitSubject | None:
        user_limits = self.limits_of(principal)
        api_key_limits = self._api_key if principal.api_key_id is not None else Limits()
        if user_limits.is_unlimited and api_key_limits.is_unlimited:
            return None
        return LimitSubject(
            user_id=principal.user_id,
            role=principal.role,
            user_limits=user_limits,
            api_key_id=principal.api_key_id,
            api_key_limits=api_key_limits,
        )


def _first_set(value: int | None, default: int | None) -> int | None:
    return value if value is not None else default
