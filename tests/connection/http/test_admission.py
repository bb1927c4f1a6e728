"""A saturated queue sheds load at once with 503 + Retry-After, instead of queueing a doomed wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.connection.http.conftest import demo_settings, register
from tests.server import running_server, wait_until
from ziggurat.config import AdmissionSettings, RoutingSettings


def test_a_request_that_would_wait_too_long_is_refused_at_once(tmp_path: Path) -> None:
    # No routing retries: a refused request retried after a backoff (up to 0.6 s by default) could
    # find the queue drained meanwhile and be served, and this test is about the refusal itself.
    settings = demo_settings(tmp_path, max_concurrency=1, demo_inter_token_s=0.02).model_copy(
        update={"admission": AdmissionSettings(api_max_wait_s=0.5), "routing": RoutingSettings(max_retries=0)}
    )
    with running_server(settings) as server:
        account = register(server.base_url, "busy@example.com")
        url = server.base_url + "/v1/chat/completions"
        body = {"model": "ziggurat-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
        # One generation teaches the gateway how long a job takes (~0.8 s of decoding).
        assert httpx.post(url, json=body, headers=account.key_headers, timeout=30).status_code == 200

        statuses: list[int] = []

        def call() -> None:
            response = httpx.post(url, json=body, headers=account.key_headers, timeout=60)
            statuses.append(response.status_code)

        workers = [threading.Thread(target=call) for _ in range(3)]
        for worker in workers:
            worker.start()
        assert wait_until(lambda: server.services.broker.queue_depth("ziggurat-demo") >= 1, timeout_s=5)
        started = time.monotonic()
        refused = httpx.post(url, json=body, headers=account.key_headers, timeout=60)
        assert time.monotonic() - started < 1.0  # at once, not after waiting
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "expected wait" in refused.json()["error"]["message"]
        for worker in workers:
            worker.join(timeout=60)
        metrics = httpx.get(server.base_url + "/metrics").text
    assert 'ziggurat_rejections_total{reason="queue_wait"}' in metrics
