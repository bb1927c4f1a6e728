"""The remote servers one `OpenAIEngine` relays to: their addresses, weights, breakers and health.

Several servers can serve the same model (vLLM replicas behind no load
balancer, or two regions). Each request goes to one of them, chosen at random
in proportion to its weight among those whose circuit breaker lets a request
through; a server that keeps failing is skipped until its breaker lets a probe
through again. Nothing here does I/O: `openai.py` sends the requests and
reports each verdict.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from yarl import URL

from ziggurat.errors import ConfigurationError
from ziggurat.model.breaker import BreakerState, CircuitBreaker


@dataclass(slots=True, frozen=True)
class EndpointConfig:
    """One server as configured: its base URL (ending in /v1), its API key, its share of requests."""

    url: str
    api_key: str | None = None
    weight: float = 1.0


class Endpoint:
    """One server: where to send requests, with what key, and what we know of its health.

    `is_healthy` is the last observation (a probe or a request): it makes the
    engine not ready at once, while the breaker only opens after repeated failures.
    """

    __slots__ = (
        "api_key",
        "breaker",
        "chat_url",
        "headers",
        "is_healthy",
        "models_url",
        "safe_url",
        "weight",
    )

    def __init__(self, config: EndpointConfig, breaker: CircuitBreaker) -> None:
        base = URL(config.url)
        if base.scheme not in ("http", "https") or not base.host or not config.weight > 0:
            raise ConfigurationError("Each OpenAI endpoint needs an http(s) URL and a weight above 0.")
        self.chat_url = (base / "chat/completions").with_query(base.query)
        self.models_url = (base / "models").with_query(base.query)
        self.safe_url = str(base.with_user(None).with_query(None).with_fragment(None))
        """For logs and descriptions: no credentials, no query string."""
        self.api_key = config.api_key or None
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.weight = config.weight
        self.breaker = breaker
        self.is_healthy = False


class EndpointPool:
    """Weighted choice among the endpoints whose breaker lets a request through."""

    def __init__(self, endpoints: Sequence[Endpoint], *, chooser: random.Random | None = None) -> None:
        if not endpoints:
            raise ConfigurationError("The openai engine needs at least one endpoint.")
        self._endpoints = tuple(endpoints)
        self._chooser = chooser or random.Random()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    @property
    def is_ready(self) -> bool:
        """Some endpoint was healthy when last seen and its breaker is not open."""
        return any(e.is_healthy and e.breaker.state is not BreakerState.OPEN for e in self._endpoints)

    def acquire(self, tried: Collection[Endpoint] = ()) -> Endpoint | None:
        """An endpoint for one request (not one of `tried`), its breaker taken; None when none may be used."""
        candidates = [e for e in self._endpoints if e not in tried and e.breaker.can_try]
        if not candidates:
            return None
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            chosen = self._chooser.choices(candidates, weights=[e.weight for e in candidates])[0]
        return chosen if chosen.breaker.try_acquire() else None

    def has_untried(self, tried: Collection[Endpoint]) -> bool:
        return any(e not in tried and e.breaker.can_try for e in self._endpoints)
