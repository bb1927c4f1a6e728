"""The routing policy: model aliases, fallback chains, retry backoff and the gateway's timeouts.

A plain value built once in `app.py` from `RoutingSettings`. It answers
questions (what does this name mean, which models may answer for this one, how
long to wait before a retry) and holds no state; `fallback.py` acts on the
answers. It deliberately does not know which models are served now: the
caller skips candidates that are not.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ziggurat.config import RoutingSettings

FallbackReason = Literal["error", "overloaded", "timeout"]
"""Why an attempt was given up before its first token."""


@dataclass(slots=True, frozen=True)
class RoutingPolicy:
    """Aliases and chains as configured; timeouts in seconds (None: off).

    `fallbacks` maps a served model to the models that may answer in its place,
    in order; chains are not followed transitively (list the whole chain).
    `max_retries` is how often one model is tried again after an error or a
    full queue before the chain moves on; a first-token timeout moves on at
    once, because a retry would queue behind the same slow model. The
    first-token timeout only applies while another model is left to try:
    waiting is the best option once there is none (`total_timeout_s` is the
    hard limit).
    """

    aliases: Mapping[str, str] = field(default_factory=dict)
    fallbacks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_retries: int = 0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 2.0
    first_token_timeout_s: float | None = None
    inter_token_timeout_s: float | None = None
    total_timeout_s: float | None = None
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False, repr=False)
    """How a retry waits (tests pass one that records the pause)."""
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    """Uniform in [0, 1): the fraction of the backoff ceiling a retry waits."""

    @classmethod
    def from_settings(cls, settings: RoutingSettings) -> RoutingPolicy:
        """The policy `settings` describe (a fallback chain may be keyed by an alias of its model)."""
        aliases = dict(settings.aliases)
        fallbacks = {aliases.get(model, model): tuple(chain) for model, chain in settings.fallbacks.items()}
        return cls(
            aliases=aliases,
            fallbacks=fallbacks,
            max_retries=settings.max_retries,
            backoff_base_s=settings.backoff_base_s,
            backoff_cap_s=settings.backoff_cap_s,
            first_token_timeout_s=settings.first_token_timeout_s or None,
            inter_token_timeout_s=settings.inter_token_timeout_s or None,
            total_timeout_s=settings.total_timeout_s or None,
        )

    def canonical(self, name: str) -> str:
        """The served model `name` stands for (itself unless it is an alias)."""
        return self.aliases.get(name, name)

    def chain(self, model: str) -> tuple[str, ...]:
        """`model` followed by its fallbacks (aliases resolved, each model once)."""
        chain = [model]
        for name in self.fallbacks.get(model, ()):
            target = self.canonical(name)
            if target not in chain:
                chain.append(target)
        return tuple(chain)

    def applies_to(self, model: str) -> bool:
        """Whether a request for `model` needs the fallback machinery at all (else it is a plain stream)."""
        return (
            self.max_retries > 0
            or len(self.chain(model)) > 1
            or self.total_timeout_s is not None
            or self.inter_token_timeout_s is not None
        )

    @property
    def max_attempts(self) -> int:
        """The most jobs one request can become (attempt ids a cancel must cover)."""
        longest = max((len(self.chain(model)) for model in self.fallbacks), default=1)
        return longest * (1 + self.max_retries)

    def backoff_ceiling_s(self, retry: int) -> float:
        """The longest pause before retry number `retry` (1, 2, …): base * 2^(retry-1), capped."""
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** max(retry - 1, 0))

    def backoff_s(self, retry: int) -> float:
        """Full jitter: uniform in [0, `backoff_ceiling_s(retry)`), so retries of many requests spread out."""
        return self.jitter() * self.backoff_ceiling_s(retry)


def attempt_job_id(job_id: str, attempt: int) -> str:
    """The job id of a request's `attempt`-th submission: the request's own id first, then `<id>.<n>`."""
    return job_id if attempt == 0 else f"{job_id}.{attempt}"
