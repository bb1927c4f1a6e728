"""`/metrics`: what one process reports after some traffic, read as Prometheus would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.connection.http.conftest import Account
from tests.server import RunningServer

MODEL = "ziggurat-demo"


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(server.base_url + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_metrics_report_outcomes_errors_queue_wait_engines_and_readiness(
    demo_server: RunningServer, alice: Account
) -> None:
    with httpx.Client(base_url=demo_server.base_url, headers=alice.key_headers, timeout=30) as client:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.post("/v1/chat/completions", json={**chat, "model": "nope"}).status_code == 404
        assert client.post("/v1/chat/completions", json={**chat, "messages": "x"}).status_code == 400
    assert httpx.post(demo_server.base_url + "/v1/chat/completions", json=chat).status_code == 401

    scraped = scrape(demo_server)
    assert value(scraped, "ziggurat_requests_total", model=MODEL, status="ok") == 1
    assert value(scraped, "ziggurat_errors_total", type="invalid_request_error") == 2
    assert value(scraped, "ziggurat_errors_total", type="authentication_error") == 1
    assert value(scraped, "ziggurat_queue_wait_seconds_count", model=MODEL, priority="api") == 1
    assert value(scraped, "ziggurat_worker_jobs_total", model=MODEL, outcome="completed") == 1
    assert value(scraped, "ziggurat_engine_capacity", model=MODEL) == 64
    assert ("ziggurat_engine_running", frozenset({("model", MODEL)})) in scraped
    assert ("ziggurat_worker_active_jobs", frozenset({("model", MODEL)})) in scraped
    assert (
        "ziggurat_queue_depth_by_priority",
        frozenset({("model", MODEL), ("priority", "interactive")}),
    ) in scraped
    for check in ("broker", "streams", "database", "engine"):
        assert value(scraped, "ziggurat_readiness", check=check) == 1
