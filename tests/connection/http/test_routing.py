"""Aliases and fallbacks through `/v1`: a failing fine-tuned model answered by the demo model behind it.

The in-process server runs the demo engine; the test adds a second, failing
model with its own worker on the same broker (as a second worker process would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

import ziggurat.app as app_module
from tests.brokers import running_worker
from tests.connection.http.inprocess import MODEL, app_client, app_settings, cheap_passwords, sign_up
from tests.service.routing.engines import RoutedEngine
from ziggurat.app import build_app
from ziggurat.connection.http.deps import Services
from ziggurat.connection.models import StaticModels
from ziggurat.model.engine import ModelInfo

FINE_TUNED = "fine-tuned"


@pytest.fixture
def fine_tuned() -> RoutedEngine:
    engine = RoutedEngine(FINE_TUNED)
    engine.failures = 1_000  # down: every request fails before its first token
    return engine


@pytest.fixture
async def client(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, fine_tuned: RoutedEngine
) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)

    def with_fine_tuned(models: Sequence[ModelInfo], capacities: object = None) -> StaticModels:
        return StaticModels([*models, fine_tuned.info])

    monkeypatch.setattr(app_module, "StaticModels", with_fine_tuned)
    routing = {"aliases": {"assistant": FINE_TUNED}, "fallbacks": {FINE_TUNED: [MODEL]}, "max_retries": 0}
    app = build_app(app_settings(tmp_path, database_url, routing=routing))
    async with app_client(app) as client:
        services: Services = app.state.services
        async with running_worker(services.broker, fine_tuned):
            yield client


async def test_models_lists_aliases(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice@example.com")
    listed = await client.get("/v1/models", headers=alice.headers)
    assert listed.status_code == 200, listed.text
    assert [model["id"] for model in listed.json()["data"]] == [MODEL, FINE_TUNED, "assistant"]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_alias_of_a_failing_model_is_answered_by_its_fallback(
    client: httpx.AsyncClient, fine_tuned: RoutedEngine, stream: bool
) -> None:
    alice = await sign_up(client, "alice@example.com")
    body = {"model": "assistant", "messages": [{"role": "user", "content": "Hello"}], "stream": stream}
    response = await client.post("/v1/chat/completions", json=body, headers=alice.headers)

    assert response.status_code == 200, response.text
    assert "demo engine" in response.text and "error" not in response.text
    assert [request.model for request in fine_tuned.requests] == [FINE_TUNED]
    if not stream:
        assert response.json()["model"] == FINE_TUNED
    metrics = (await client.get("/metrics")).text
    assert (
        f'ziggurat_fallbacks_total{{from_model="{FINE_TUNED}",reason="error",to_model="{MODEL}"}} 1.0'
        in metrics
    )


async def test_an_unknown_alias_target_is_not_listed_or_served(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    app = build_app(app_settings(tmp_path, database_url, routing={"aliases": {"ghost": "nowhere"}}))
    async with app_client(app) as client:
        alice = await sign_up(client, "alice@example.com")
        listed = await client.get("/v1/models", headers=alice.headers)
        assert [model["id"] for model in listed.json()["data"]] == [MODEL]
        body = {"model": "ghost", "messages": [{"role": "user", "content": "Hello"}]}
        response = await client.post("/v1/chat/completions", json=body, headers=alice.headers)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
