"""Prometheus metrics for the gateway and workers, one registry per app instance.

A registry per app (not the global default) lets tests and embedded users build
several apps in one process. Names follow the field's usual conventions
(`*_seconds` histograms, `*_total` counters) so stock dashboards apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)
_REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _QueueDepthCollector(Collector):
    """Reads queue depth at scrape time, so the hot path never updates a gauge for it."""

    def __init__(self, read_depths: Callable[[], dict[str, int]]) -> None:
        self._read_depths = read_depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("ziggurat_queue_depth", "Jobs waiting for a worker", labels=["model"])
        for model, depth in self._read_depths().items():
            family.add_metric([model], depth)
        yield family


class Metrics:
    """All metrics the platform exports; `render()` produces the `/metrics` body."""

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

    def watch_queue_depth(self, read_depths: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_QueueDepthCollector(read_depths))

    def render(self) -> bytes:
        return generate_latest(self.registry)
