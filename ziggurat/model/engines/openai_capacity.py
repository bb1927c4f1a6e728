"""How much a remote inference server can really take: its own metrics, read on a timer.

A static `max_concurrency` is a guess. vLLM and SGLang know better: they
publish how many requests run, how many wait in their queue and how full
their KV cache is. Sending more while requests already wait only lengthens
their queue (and takes the jobs from workers whose servers have room), so a
`LoadPoller` reads each endpoint's Prometheus `/metrics` (and its health) every
`interval_s` and `endpoint_limit` turns the readings into how many of our
requests that endpoint should hold:

- the configured maximum, less the requests the server has waiting;
- none while its KV cache is above `max_kv_cache_usage` (the server would
  soon preempt or queue);
- nothing while the endpoint is unhealthy, if another endpoint is healthy
  (when none is, requests still go out and fail fast, as without metrics).

Servers without metrics (a 404: OpenAI, Ollama, llama.cpp without `--metrics`)
keep the configured maximum. Readings older than three intervals are ignored.
Metric names, current as of vLLM 0.11 and SGLang 0.5: `vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc`
before V1), and `sglang:num_running_reqs`, `sglang:num_queue_reqs`,
`sglang:token_usage`; all KV figures are fractions from 0 to 1.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from ziggurat.cancellation import cancel_and_wait
from ziggurat.model.breaker import BreakerState
from ziggurat.model.engine import EndpointStats, EngineStats
from ziggurat.model.engines.openai_endpoints import Endpoint
from ziggurat.model.engines.openai_wire import describe_failure, lists_model

log = logging.getLogger(__name__)

_RUNNING: Final = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING: Final = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_KV_USAGE: Final = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
_WANTED: Final = (*_RUNNING, *_WAITING, *_KV_USAGE)
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_STALE_INTERVALS: Final = 3
_MAX_METRICS_BYTES: Final = 8 << 20


@dataclass(slots=True, frozen=True)
class UpstreamLoad:
    """One reading of a server's scheduler for one model; None where the server does not say."""

    running: int | None
    waiting: int | None
    kv_cache_usage: float | None


@dataclass(slots=True, frozen=True)
class LoadPolicy:
    """How often to read the servers (0: never, the static maximum holds) and when their KV cache is full."""

    interval_s: float = 2.0
    max_kv_cache_usage: float = 0.95


def parse_load(text: str, model: str) -> UpstreamLoad | None:
    """The load figures for `model` in a Prometheus text exposition; None when it has none of them.

    Only the few wanted lines are parsed (vLLM's page is mostly histogram
    buckets). Series are kept when their `model_name` is `model` or absent;
    when no series names `model`, all are kept (a server whose metrics use
    another alias of its one model). Series of several engines (vLLM data
    parallel, the `engine` label) add up; duplicates per tensor-parallel rank
    (SGLang's `tp_rank`) count once.
    """
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        name, labels, value = _parse_line(line)
        if name in _WANTED and value is not None:
            samples.append((name, labels, value))
    if not samples:
        return None
    named = [s for s in samples if s[1].get("model_name") in (model, None)]
    if not any(s[1].get("model_name") == model for s in named):
        named = samples
    return UpstreamLoad(
        running=_count(named, _RUNNING),
        waiting=_count(named, _WAITING),
        kv_cache_usage=_highest(named, _KV_USAGE),
    )


def _parse_line(line: str) -> tuple[str, dict[str, str], float | None]:
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        name, labels, rest = line[:brace], dict(_LABEL.findall(line[brace + 1 : close])), line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = {}
    fields = rest.split()
    try:
        return name, labels, float(fields[0]) if fields else None
    except ValueError:
        return name, labels, None


Sample = tuple[str, dict[str, str], float]


def _first_family(samples: list[Sample], names: Sequence[str]) -> list[tuple[dict[str, str], float]]:
    """The samples of the first of `names` the server publishes (newer names come first)."""
    for name in names:
        found = [(labels, value) for metric, labels, value in samples if metric == name]
        if found:
            return found
    return []


def _count(samples: list[Sample], names: Sequence[str]) -> int | None:
    found = _first_family(samples, names)
    if not found:
        return None
    per_engine: dict[str, float] = {}
    for labels, value in found:
        engine = labels.get("engine", "")
        per_engine[engine] = max(per_engine.get(engine, 0.0), value)
    return max(0, round(sum(per_engine.values())))


def _highest(samples: list[Sample], names: Sequence[str]) -> float | None:
    found = _first_family(samples, names)
    return max(value for _, value in found) if found else None


def endpoint_limit(endpoint: Endpoint, policy: LoadPolicy, *, any_healthy: bool, now: float) -> int:
    """How many of our requests `endpoint` should hold now (see the module docstring)."""
    if endpoint.breaker.state is BreakerState.OPEN or (not endpoint.passed_probe and any_healthy):
        return 0
    limit = endpoint.max_concurrency
    load = endpoint.load
    if load is None or now - endpoint.load_seen_at > _STALE_INTERVALS * policy.interval_s:
        return limit
    if load.kv_cache_usage is not None and load.kv_cache_usage >= policy.max_kv_cache_usage:
        # Not "what it holds now": that count falls as requests end, between two readings.
        return 0
    if load.waiting:
        return max(0, limit - load.waiting)
    return limit


def endpoint_stats(endpoint: Endpoint) -> EndpointStats:
    """One server as metrics show it: our view (health, breaker, requests in flight, limit) and its own."""
    load = endpoint.load
    return EndpointStats(
        endpoint=endpoint.safe_url,
        is_healthy=endpoint.is_healthy,
        breaker=endpoint.breaker.state.value,
        in_flight=endpoint.in_flight,
        limit=endpoint.limit,
        running=load.running if load is not None else None,
        waiting=load.waiting if load is not None else None,
        kv_cache_usage=load.kv_cache_usage if load is not None else None,
    )


def total_stats(endpoints: Sequence[Endpoint]) -> EngineStats:
    """Running and waiting summed over the servers, KV use of the fullest; our own count where unknown."""
    running = 0
    waiting: int | None = None
    kv: float | None = None
    for endpoint in endpoints:
        load = endpoint.load
        running += load.running if load is not None and load.running is not None else endpoint.in_flight
        if load is not None and load.waiting is not None:
            waiting = (waiting or 0) + load.waiting
        if load is not None and load.kv_cache_usage is not None:
            kv = load.kv_cache_usage if kv is None else max(kv, load.kv_cache_usage)
    return EngineStats(running=running, waiting=waiting, kv_cache_usage=kv)


async def probe_health(
    session: aiohttp.ClientSession, endpoint: Endpoint, model: str, client_timeout: aiohttp.ClientTimeout
) -> bool:
    """GET the endpoint's `/models`: healthy when it answers and lists `model`.

    Sets `passed_probe` (the endpoint choice and its limit follow it) and `is_healthy` (readiness).
    """
    problem: str | None = None
    try:
        request = session.get(endpoint.models_url, headers=endpoint.headers, timeout=client_timeout)
        async with request as response:
            if response.status != 200:
                problem = f"HTTP {response.status} (does base_url end in /v1?)"
            elif not lists_model(await response.read(), model):
                problem = "model not listed by the server"
    except (aiohttp.ClientError, TimeoutError) as exc:
        problem = describe_failure(exc)
    if problem is not None:
        if endpoint.passed_probe or not endpoint.was_probed:  # once per outage, not once per poll
            context = {"base_url": endpoint.safe_url, "model": model, "reason": problem}
            log.warning("openai_engine_not_ready", extra=context)
    else:
        endpoint.breaker.record_success()
    endpoint.is_healthy = endpoint.passed_probe = problem is None
    endpoint.was_probed = True
    return endpoint.is_healthy


async def read_load(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    model: str,
    client_timeout: aiohttp.ClientTimeout,
    now: float,
) -> None:
    """Read the endpoint's `/metrics` into `endpoint.load`; a 404 means it has none (not asked again)."""
    try:
        request = session.get(endpoint.metrics_url, headers=endpoint.headers, timeout=client_timeout)
        async with request as response:
            if response.status == 404:
                endpoint.has_metrics = False
                log.info("openai_engine_no_metrics", extra={"base_url": endpoint.safe_url})
                return
            if response.status != 200:
                return
            body = await response.content.read(_MAX_METRICS_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        return  # the health probe tells about an unreachable server; the old reading goes stale
    load = parse_load(body.decode(errors="replace"), model)
    if load is None:
        endpoint.has_metrics = False
        log.info("openai_engine_no_load_metrics", extra={"base_url": endpoint.safe_url})
        return
    endpoint.load = load
    endpoint.load_seen_at = now


class LoadPoller:
    """Every `policy.interval_s`, probes each endpoint's health and reads its load, then calls `on_update`.

    One task for all endpoints; the endpoints are read concurrently, so a slow
    one delays the others' next reading, never their current one.
    """

    def __init__(
        self,
        *,
        endpoints: Sequence[Endpoint],
        model: str,
        policy: LoadPolicy,
        timeout_s: float,
        on_update: Callable[[], None],
    ) -> None:
        self._endpoints = tuple(endpoints)
        self._model = model
        self._policy = policy
        # A reading much slower than an interval is stale; a probe at start still gets a few seconds.
        self._timeout = aiohttp.ClientTimeout(total=min(timeout_s, max(policy.interval_s, 5.0)))
        self._on_update = on_update
        self._task: asyncio.Task[None] | None = None

    def start(self, session: aiohttp.ClientSession) -> None:
        if self._task is None and self._policy.interval_s > 0:
            self._task = asyncio.create_task(self._poll_forever(session), name=f"load-{self._model}")

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._poll(session, endpoint, loop.time()) for endpoint in self._endpoints))
        self._on_update()

    async def _poll(self, session: aiohttp.ClientSession, endpoint: Endpoint, now: float) -> None:
        if await probe_health(session, endpoint, self._model, self._timeout) and endpoint.has_metrics:
            await read_load(session, endpoint, self._model, self._timeout, now)

    async def _poll_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self._policy.interval_s)
            try:
                await self.poll_once(session)
            except Exception:  # a bug here must not stop the readings for good
                log.exception("openai_engine_poll_failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)


class CapacityTracker:
    """The engine's capacity now: the sum of its endpoints' limits, at most `max_concurrency`.

    `refresh()` recomputes it (after each poll and each change of an endpoint's
    health); `changed()` returns at the next change, so a worker waiting for room
    sleeps instead of polling.
    """

    def __init__(self, endpoints: Sequence[Endpoint], *, max_concurrency: int, policy: LoadPolicy) -> None:
        self._endpoints = tuple(endpoints)
        self._max = max_concurrency
        self._policy = policy
        self.available = max_concurrency
        self._changed = asyncio.Event()

    def refresh(self) -> None:
        if self._policy.interval_s <= 0:
            return  # not watching the servers: the configured maximum holds
        now = asyncio.get_running_loop().time()
        any_healthy = any(e.passed_probe and e.breaker.state != BreakerState.OPEN for e in self._endpoints)
        for endpoint in self._endpoints:
            endpoint.limit = endpoint_limit(endpoint, self._policy, any_healthy=any_healthy, now=now)
        available = min(self._max, sum(endpoint.limit for endpoint in self._endpoints))
        if not any_healthy:
            available = self._max  # nothing known to work: let requests go out and fail fast, as before
        if available != self.available:
            log.info("openai_engine_capacity", extra={"available": available, "was": self.available})
            self.available = available
            # Wake every waiter, then arm a fresh event for the next change.
            self._changed.set()
            self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()
