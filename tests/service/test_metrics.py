"""The metrics registry: scrape-time readings of engines, queues and readiness, and the worker's reports."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ziggurat.connection.broker.base import Priority
from ziggurat.model.engine import EngineStats, ModelInfo
from ziggurat.model.engines.demo import DemoEngine
from ziggurat.service.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


class GpuLikeEngine:
    """An engine that reports every reading, as a batching engine with a KV-cache pool would."""

    info = ModelInfo(name="big", engine="test")
    capacity = 16
    is_ready = True

    def stats(self) -> EngineStats:
        return EngineStats(running=12, waiting=3, batch_size=12, kv_cache_usage=0.75)


def test_engines_report_capacity_and_the_readings_they_have() -> None:
    metrics = Metrics()
    demo = DemoEngine(
        served_name="demo", capacity=4, time_to_first_token_s=0, inter_token_s=0, default_max_tokens=8
    )
    demo.active_count = 2
    metrics.watch_engines([demo, GpuLikeEngine()])  # type: ignore[list-item]
    scraped = samples(metrics)
    assert scraped[("ziggurat_engine_capacity", (("model", "demo"),))] == 4
    assert scraped[("ziggurat_engine_running", (("model", "demo"),))] == 2
    assert ("ziggurat_engine_batch_size", (("model", "demo"),)) not in scraped  # the demo engine has none
    big = (("model", "big"),)
    assert scraped[("ziggurat_engine_waiting", big)] == 3
    assert scraped[("ziggurat_engine_batch_size", big)] == 12
    assert scraped[("ziggurat_engine_kv_cache_usage_ratio", big)] == 0.75


def test_queue_depth_by_priority_only_for_queues_that_know_it() -> None:
    metrics = Metrics()
    metrics.watch_priority_depths(
        lambda: {"local": {Priority.INTERACTIVE: 2, Priority.API: 0, Priority.BACKGROUND: 5}, "remote": None}
    )
    scraped = samples(metrics)
    assert (
        scraped[("ziggurat_queue_depth_by_priority", (("model", "local"), ("priority", "interactive")))] == 2
    )
    assert (
        scraped[("ziggurat_queue_depth_by_priority", (("model", "local"), ("priority", "background")))] == 5
    )
    assert not any(
        name == "ziggurat_queue_depth_by_priority" and ("model", "remote") in labels
        for name, labels in scraped
    )


def test_worker_reports_become_queue_wait_and_job_outcomes() -> None:
    metrics = Metrics()
    metrics.job_claimed("m", Priority.BACKGROUND, 3.0)
    metrics.job_claimed("m", Priority.BACKGROUND, None)  # unknown wait: not observed
    metrics.job_settled("m", "dead_lettered")
    metrics.watch_worker("m", lambda: 7)
    metrics.record_readiness({"broker": True, "streams": False})
    scraped = samples(metrics)
    assert scraped[("ziggurat_queue_wait_seconds_count", (("model", "m"), ("priority", "background")))] == 1
    assert scraped[("ziggurat_queue_wait_seconds_sum", (("model", "m"), ("priority", "background")))] == 3.0
    assert scraped[("ziggurat_worker_jobs_total", (("model", "m"), ("outcome", "dead_lettered")))] == 1
    assert scraped[("ziggurat_worker_active_jobs", (("model", "m"),))] == 7
    assert scraped[("ziggurat_readiness", (("check", "broker"),))] == 1
    assert scraped[("ziggurat_readiness", (("check", "streams"),))] == 0
