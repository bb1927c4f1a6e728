"""LoRA adapters hot-loaded through a gateway onto a worker in another process, for real.

A gateway (`--role api`) and a worker (`--role worker`, the transformers
engine on the tiny Llama) share Redis and RabbitMQ. The admin loads a tiny
random LoRA adapter through the gateway's admin API: the worker must pick it
up from Redis, advertise `tiny:alpha`, and answer differently from the base.
After DELETE the gateway refuses new requests for it with 404.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.connection.http.conftest import register
from tests.model.engines.test_lora import _build_adapter
from tests.tiny_llama import build_tiny_llama
from tests.topology.conftest import TopologyFactory

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.model]

ADAPTERS = "/api/admin/models/tiny/adapters"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny Llama and one random LoRA adapter for it, built offline."""
    base = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    adapter = _build_adapter(base, tmp_path_factory.mktemp("lora") / "alpha", 1, ["q_proj", "v_proj"])
    return base, adapter


def _chat(client: httpx.Client, model: str) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    return client.post("/v1/chat/completions", json=body)


def test_an_adapter_loaded_through_the_gateway_is_served_by_the_worker_until_unloaded(
    make_topology: TopologyFactory, tiny_model: tuple[Path, Path]
) -> None:
    base, adapter = tiny_model
    engine = {
        "ZIGGURAT_ENGINE__KIND": "transformers",
        "ZIGGURAT_ENGINE__MODEL": str(base),
        "ZIGGURAT_ENGINE__SERVED_NAME": "tiny",
        "ZIGGURAT_ENGINE__MAX_BATCH_SIZE": "2",
        "ZIGGURAT_ENGINE__DEFAULT_MAX_TOKENS": "16",
    }
    with make_topology(**engine) as topology:  # the gateway builds no engine: only the worker uses these
        topology.start("worker")
        gateway = topology.start("api")
        admin = register(gateway.url, "root@example.com")
        with httpx.Client(base_url=gateway.url, headers=admin.jwt_headers, timeout=30) as client:
            bad = client.post(ADAPTERS, json={"name": "alpha", "path": "relative/path"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "path"
            assert (
                client.post("/api/admin/models/nope/adapters", json={"name": "a", "path": "/x"}).status_code
                == 404
            )

            loaded = client.post(ADAPTERS, json={"name": "alpha", "path": str(adapter)})
            # 201: the worker loaded it and this gateway routes `tiny:alpha` already.
            assert loaded.status_code == 201, loaded.text
            assert loaded.json()["model"] == "tiny:alpha"
            assert [w["state"] for w in loaded.json()["workers"]] == ["loaded"]
            assert client.post(ADAPTERS, json={"name": "alpha", "path": str(adapter)}).status_code == 409

            listed = client.get(ADAPTERS).json()["data"]
            assert [(a["name"], [w["state"] for w in a["workers"]]) for a in listed] == [
                ("alpha", ["loaded"])
            ]
            models = [model["id"] for model in client.get("/v1/models").json()["data"]]
            assert models == ["tiny", "tiny:alpha"]

            answers = {model: _chat(client, model) for model in ("tiny", "tiny:alpha")}
            for model, response in answers.items():
                assert response.status_code == 200, response.text
                assert response.json()["model"] == model
            texts = {model: r.json()["choices"][0]["message"]["content"] for model, r in answers.items()}
            assert texts["tiny"] != texts["tiny:alpha"]

            # A path that does not exist on the worker: reported for that worker, the worker lives on.
            broken = client.post(ADAPTERS, json={"name": "broken", "path": "/nowhere/at/all"})
            assert broken.status_code == 202, broken.text
            [state] = broken.json()["workers"]
            assert state["state"] == "error" and "/nowhere/at/all" in state["error"]

            assert client.delete(f"{ADAPTERS}/alpha").status_code == 204
            refused = _chat(client, "tiny:alpha")
            assert refused.status_code == 404, refused.text
            assert client.delete(f"{ADAPTERS}/alpha").status_code == 404
            assert _chat(client, "tiny").json()["choices"][0]["message"]["content"] == texts["tiny"]
