"""Prometheus metrics for the gateway and workers, one registry per app instance.

A registry per app (not the global default) lets tests and embedded users build
several apps in one process. Names follow the field's usual conventions
(`ziggurat_` prefix, `*_seconds` histograms, `*_total` counters, base units) and
mirror vLLM's where the meaning is the same (time to first token, inter-token
latency, end-to-end latency, queue time, running / waiting requests, KV-cache
use), so its dashboards translate. Readings that exist already elsewhere (queue
depth, engine scheduler state, worker jobs) are collected at scrape time, so the
hot path never updates a gauge for them. The dashboard and alert rules in
`deploy/` use these names; `tests/deploy/` checks they exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ziggurat.connection.broker.base import Priority
from ziggurat.model.engine import EndpointReporter, Engine, StatsReporter, capacity_now
from ziggurat.service.labelled_metrics import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)
_REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

PriorityDepthReader = Callable[[], Mapping[str, Mapping[Priority, int] | None]]


def priority_label(priority: Priority) -> str:
    """`interactive`, `api` or `background`: the `priority` label value."""
    return priority.name.lower()


class _QueueDepthCollector(Collector):
    """Reads queue depth at scrape time, so the hot path never updates a gauge for it."""

    def __init__(self, read_depths: Callable[[], dict[str, int]]) -> None:
        self._read_depths = read_depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("ziggurat_queue_depth", "Jobs waiting for a worker", labels=["model"])
        for model, depth in self._read_depths().items():
            family.add_metric([model], depth)
        yield family


class _PriorityDepthCollector(Collector):
    """Queue depth per priority class, for queues that can tell (the in-process one; not RabbitMQ)."""

    def __init__(self, read_depths: PriorityDepthReader) -> None:
        self._read_depths = read_depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ziggurat_queue_depth_by_priority",
            "Jobs waiting for a worker, by priority class (queues that can tell only)",
            labels=["model", "priority"],
        )
        for model, depths in self._read_depths().items():
            for priority, depth in (depths or {}).items():
                family.add_metric([model, priority_label(priority)], depth)
        yield family


class _EngineCollector(Collector):
    """Each engine's capacity and, where it reports them (`StatsReporter`), its scheduler readings."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self._engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = partial(GaugeMetricFamily, labels=["model"])
        capacity = family(
            "ziggurat_engine_capacity", "Generations the engine may run at once now (live for remote engines)"
        )
        running = family("ziggurat_engine_running", "Generations holding an engine slot now")
        waiting = family("ziggurat_engine_waiting", "Generations accepted by the engine, not yet running")
        batch = family("ziggurat_engine_batch_size", "Sequences in the engine's latest decode step")
        kv_cache = family(
            "ziggurat_engine_kv_cache_usage_ratio", "Share of the engine's KV-cache budget in use (0-1)"
        )
        for engine in self._engines:
            model = [engine.info.name]
            capacity.add_metric(model, capacity_now(engine) or 0)
            if not isinstance(engine, StatsReporter):
                continue
            stats = engine.stats()
            running.add_metric(model, stats.running)
            for target, value in ((waiting, stats.waiting), (batch, stats.batch_size)):
                if value is not None:
                    target.add_metric(model, value)
            if stats.kv_cache_usage is not None:
                kv_cache.add_metric(model, stats.kv_cache_usage)
        yield from (capacity, running, waiting, batch, kv_cache)
        yield from _endpoint_families(self._engines)


def _endpoint_families(engines: Sequence[Engine]) -> Iterator[GaugeMetricFamily]:
    """Per server behind a remote engine (`EndpointReporter`): which one is down, full or refused."""

    family = partial(GaugeMetricFamily, labels=["model", "endpoint"])
    up = family("ziggurat_engine_endpoint_up", "1 when the server passed its last probe or request")
    breaker_open = family(
        "ziggurat_engine_endpoint_breaker_open", "1 while the server's circuit breaker is open or half-open"
    )
    in_flight = family("ziggurat_engine_endpoint_in_flight", "Generations this process has sent the server")
    limit = family("ziggurat_engine_endpoint_limit", "Generations this process may send the server now")
    running = family("ziggurat_engine_endpoint_running", "Sequences the server reports running (all clients)")
    waiting = family("ziggurat_engine_endpoint_waiting", "Requests the server reports queued (all clients)")
    kv_cache = family(
        "ziggurat_engine_endpoint_kv_cache_usage_ratio", "Share of the server's KV cache in use (0-1)"
    )
    for engine in engines:
        if not isinstance(engine, EndpointReporter):
            continue
        for reading in engine.endpoint_stats():
            labels = [engine.info.name, reading.endpoint]
            up.add_metric(labels, 1 if reading.is_healthy else 0)
            breaker_open.add_metric(labels, 0 if reading.breaker == "closed" else 1)
            in_flight.add_metric(labels, reading.in_flight)
            limit.add_metric(labels, reading.limit)
            for target, value in (
                (running, reading.running),
                (waiting, reading.waiting),
                (kv_cache, reading.kv_cache_usage),
            ):
                if value is not None:
                    target.add_metric(labels, value)
    yield from (up, breaker_open, in_flight, limit, running, waiting, kv_cache)


class Metrics:
    """All metrics the platform exports; `render()` produces the `/metrics` body.

    It is also the worker's job observer (`job_claimed`, `job_settled`).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "ziggurat_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "ziggurat_http_request_duration_seconds",
            "Time until the response (or its stream) completed",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "ziggurat_time_to_first_token_seconds",
            "Submit to first generated text, as seen by the gateway",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "ziggurat_inter_token_latency_seconds",
            "Gap between consecutive text chunks of one stream",
            ["model"],
            buckets=_TOKEN_GAP_BUCKETS,
            registry=registry,
        )
        self.e2e_latency = Histogram(
            "ziggurat_e2e_request_latency_seconds",
            "Submit to final event of a generation",
            ["model"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.active_streams = Gauge(
            "ziggurat_active_streams", "Generations being streamed now", ["model"], registry=registry
        )
        self.prompt_tokens = Counter(
            "ziggurat_prompt_tokens_total", "Prompt tokens processed", ["model"], registry=registry
        )
        self.completion_tokens = Counter(
            "ziggurat_completion_tokens_total", "Completion tokens generated", ["model"], registry=registry
        )
        self.generations = Counter(
            "ziggurat_generations_total",
            "Finished generations by finish reason",
            ["model", "finish_reason"],
            registry=registry,
        )
        self.rejections = Counter(
            "ziggurat_rejections_total",
            "Requests refused before generation, by reason",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "ziggurat_rate_limited_total",
            "Generations refused by a rate limit or quota (limit: which one; scope: user or api_key)",
            ["limit", "scope"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "ziggurat_fallbacks_total",
            "Attempts given up before their first token and tried again (from_model == to_model: a retry)",
            ["from_model", "to_model", "reason"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "ziggurat_cache_lookups_total",
            "Cache lookups by cache and result (hit, miss); `match` tells exact from semantic hits",
            ["cache", "result", "match"],
            registry=registry,
        )
        self.worker_active_jobs = Gauge(
            "ziggurat_worker_active_jobs",
            "Jobs a worker in this process is running",
            ["model"],
            registry=registry,
        )
        self.requests = Counter(
            "ziggurat_requests_total",
            "Generation requests by outcome: ok, error, cancelled (client left or stopped), rejected",
            ["model", "status"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "ziggurat_queue_wait_seconds",
            "Time a job waited in the queue before a worker claimed it (first delivery)",
            ["model", "priority"],
            buckets=_QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.worker_jobs = Counter(
            "ziggurat_worker_jobs_total",
            "Jobs a worker finished with, by outcome",
            ["model", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "ziggurat_errors_total",
            "Error responses by OpenAI error type",
            ["type"],
            registry=registry,
        )
        self.readiness = Gauge(
            "ziggurat_readiness",
            "Readiness checks at the last scrape (1 passing, 0 failing): broker, streams, database, ...",
            ["check"],
            registry=registry,
        )

    def watch_queue_depth(self, read_depths: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_QueueDepthCollector(read_depths))

    def watch_priority_depths(self, read_depths: PriorityDepthReader) -> None:
        self.registry.register(_PriorityDepthCollector(read_depths))

    def watch_engines(self, engines: Sequence[Engine]) -> None:
        self.registry.register(_EngineCollector(engines))

    def watch_worker(self, model: str, read_active_jobs: Callable[[], int]) -> None:
        self.worker_active_jobs.labels(model).set_function(read_active_jobs)

    def record_readiness(self, checks: Mapping[str, bool]) -> None:
        for check, is_passing in checks.items():
            self.readiness.labels(check).set(1 if is_passing else 0)

    def job_claimed(self, model: str, priority: Priority, queue_wait_s: float | None) -> None:
        if queue_wait_s is not None:
            self.queue_wait.labels(model, priority_label(priority)).observe(queue_wait_s)

    def job_settled(self, model: str, outcome: str) -> None:
        self.worker_jobs.labels(model, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
