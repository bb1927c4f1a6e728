"""The remote servers one `OpenAIEngine` relays to: their addresses, weights, breakers and health.

Several servers can serve the same model (vLLM replicas behind no load
balancer, or two regions). Each request goes to one of them, chosen at random
in proportion to its weight among those whose circuit breaker lets a request
through; a server that keeps failing is skipped until its breaker lets a probe
through again. A server that failed its last health check is skipped while
another passed its check, and one that is full (`openai_capacity.py` sets each
server's limit from its own load metrics) while another has room. Nothing here
does I/O: `openai.py` sends the requests and reports each verdict. `RelayPolicy`
holds how one request to them is bounded and tried (timeouts, attempts, breaker
thresholds, read pacing).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yarl import URL

from ziggurat.errors import ConfigurationError
from ziggurat.model.breaker import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    from ziggurat.model.engines.openai_capacity import UpstreamLoad


@dataclass(slots=True, frozen=True)
class EndpointConfig:
    """One server as configured: its base URL (ending in /v1), its API key, its share of requests."""

    url: str
    api_key: str | None = None
    weight: float = 1.0
    max_concurrency: int | None = None
    """Our requests this server may hold at most (None: the engine's `max_concurrency`)."""
    metrics_url: str | None = None
    """Its Prometheus metrics (None: `/metrics` beside `/v1`, where vLLM and SGLang serve them)."""


class Endpoint:
    """One server: where to send requests, with what key, and what we know of its health.

    `is_healthy` is the last observation (a probe or a request): it makes the
    engine not ready at once, while the breaker only opens after repeated failures.
    """

    __slots__ = (
        "_is_capped",
        "api_key",
        "breaker",
        "chat_url",
        "has_metrics",
        "headers",
        "in_flight",
        "is_healthy",
        "limit",
        "load",
        "load_seen_at",
        "max_concurrency",
        "metrics_url",
        "models_url",
        "passed_probe",
        "safe_url",
        "was_probed",
        "weight",
    )

    def __init__(self, config: EndpointConfig, breaker: CircuitBreaker, *, max_concurrency: int = 1) -> None:
        base = URL(config.url)
        if base.scheme not in ("http", "https") or not base.host or not config.weight > 0:
            raise ConfigurationError("Each OpenAI endpoint needs an http(s) URL and a weight above 0.")
        if config.max_concurrency is not None and config.max_concurrency < 1:
            raise ConfigurationError("An OpenAI endpoint's max_concurrency must be at least 1.")
        self.chat_url = (base / "chat/completions").with_query(base.query)
        self.models_url = (base / "models").with_query(base.query)
        self.metrics_url = URL(config.metrics_url) if config.metrics_url else _metrics_url(base)
        self.max_concurrency = config.max_concurrency or max_concurrency
        self.limit = self.max_concurrency
        """How many of our requests it should hold now (`openai_capacity.endpoint_limit`)."""
        self.in_flight = 0
        """Our requests it is answering now."""
        self.load: UpstreamLoad | None = None
        self.load_seen_at = 0.0
        self.has_metrics = True
        """False once it answered that it publishes none: its metrics are not asked for again."""
        self.was_probed = False
        self.passed_probe = False
        """The last health check's verdict (request failures are the breaker's business)."""
        self._is_capped = config.max_concurrency is not None

        self.safe_url = str(base.with_user(None).with_query(None).with_fragment(None))
        """For logs and descriptions: no credentials, no query string."""
        self.api_key = config.api_key or None
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.weight = config.weight
        self.breaker = breaker
        self.is_healthy = False

    @property
    def is_full(self) -> bool:
        """At its own configured cap, or at a limit its load or health lowered.

        Without either, its limit is the engine's whole capacity, which the worker already bounds.
        """
        return self.in_flight >= self.limit and (self._is_capped or self.limit < self.max_concurrency)


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
        """An endpoint for one request (not one of `tried`), its breaker taken; None when none may be used.

        Endpoints that passed their last health check and are not full come first; the others only when
        there is no such endpoint (the worker bounds the total, so this is a
        race, or a server that is down everywhere and should say so fast).
        """
        candidates = [e for e in self._endpoints if e not in tried and e.breaker.can_try]
        if not candidates:
            return None
        candidates = [e for e in candidates if e.passed_probe] or candidates
        candidates = [e for e in candidates if not e.is_full] or candidates
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            chosen = self._chooser.choices(candidates, weights=[e.weight for e in candidates])[0]
        return chosen if chosen.breaker.try_acquire() else None

    def has_untried(self, tried: Collection[Endpoint]) -> bool:
        return any(e not in tried and e.breaker.can_try for e in self._endpoints)


def _metrics_url(base: URL) -> URL:
    """`http://host:8000/v1` → `http://host:8000/metrics`: vLLM and SGLang serve both from one root."""
    path = base.path.rstrip("/")
    root = path[: -len("/v1")] if path.endswith("/v1") else path
    return base.with_path(root + "/metrics").with_query(base.query)


class RequestVerdict:
    """How one upstream request went, for its endpoint's in-flight count and circuit breaker.

    `is_ok`: True (answered, or refused a bad request: not the server's fault), False
    (failed), None (busy, or cut short by our side: a success if text had come, else
    no verdict).
    """

    __slots__ = ("endpoint", "has_text", "is_ok")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.has_text = False
        self.is_ok: bool | None = None
        endpoint.in_flight += 1

    def settle(self) -> None:
        endpoint = self.endpoint
        endpoint.in_flight -= 1
        breaker = endpoint.breaker
        if self.is_ok or (self.is_ok is None and self.has_text):
            breaker.record_success()
        elif self.is_ok is False:
            breaker.record_failure()
        else:
            breaker.release()


@dataclass(slots=True, frozen=True)
class RelayPolicy:
    """Timeouts of one upstream request, tries across servers, and when a server's breaker opens.

    `first_token_timeout_s` runs from sending the request to the first text
    (response headers and keep-alive comments included), `inter_token_timeout_s`
    between two texts, `total_timeout_s` (None: none) over the whole answer.
    """

    connect_timeout_s: float = 10.0
    first_token_timeout_s: float = 600.0
    inter_token_timeout_s: float = 600.0
    total_timeout_s: float | None = None
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    read_interval_s: float = 0.0
    """After the first text, read each stream once per this interval (`read_pacing.py`); 0: as it arrives."""

    @classmethod
    def uniform(cls, timeout_s: float) -> RelayPolicy:
        """Every wait bounded by `timeout_s` (the single `openai_timeout_s` setting)."""
        return cls(
            connect_timeout_s=timeout_s, first_token_timeout_s=timeout_s, inter_token_timeout_s=timeout_s
        )
