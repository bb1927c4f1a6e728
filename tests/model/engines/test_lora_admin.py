"""LoRA adapters through the server: start-up config, /v1/models, the admin endpoints, chat routing.

The app runs in process (ASGI) with the transformers engine on the tiny Llama
and one adapter configured at start (`engine.adapters`); the test loads a
second one through `POST /api/admin/models/tiny/adapters`, chats with it as
`tiny:beta` (which must reach the worker of `tiny`), and unloads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.connection.http.inprocess import (
    Session,
    app_client,
    app_settings,
    assert_error,
    cheap_passwords,
    sign_up,
)
from tests.model.engines.test_lora import _build_adapter
from ziggurat.app import build_app

pytestmark = pytest.mark.model

ADAPTERS = "/api/admin/models/tiny/adapters"


@pytest.fixture(scope="module")
def adapter_dirs(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("admin-adapters")
    return {
        "alpha": _build_adapter(tiny_llama_path, root / "alpha", 1, ["q_proj", "v_proj"]),
        "beta": _build_adapter(tiny_llama_path, root / "beta", 2, ["o_proj", "down_proj"]),
    }


@pytest.fixture
async def server(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tiny_llama_path: Path,
    adapter_dirs: dict[str, Path],
) -> AsyncIterator[tuple[httpx.AsyncClient, Session]]:
    cheap_passwords(monkeypatch)
    engine = {
        "kind": "transformers",
        "model": str(tiny_llama_path),
        "served_name": "tiny",
        "max_batch_size": 4,
        "default_max_tokens": 16,
        "adapters": {"alpha": str(adapter_dirs["alpha"])},
    }
    app = build_app(app_settings(tmp_path, database_url, engine=engine))
    async with app_client(app) as client:
        admin = await sign_up(client, "root@example.com")
        async with asyncio.timeout(120):
            while "tiny:alpha" not in await _models(client, admin):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        yield client, admin


async def _models(client: httpx.AsyncClient, session: Session) -> list[str]:
    response = await client.get("/v1/models", headers=session.headers)
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()["data"]]


async def _chat(client: httpx.AsyncClient, session: Session, model: str) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    return await client.post("/v1/chat/completions", json=body, headers=session.headers)


async def test_adapters_load_serve_and_unload_through_the_admin_api(
    server: tuple[httpx.AsyncClient, Session], adapter_dirs: dict[str, Path]
) -> None:
    client, admin = server
    listed = await client.get(ADAPTERS, headers=admin.headers)
    assert listed.status_code == 200
    assert [adapter["name"] for adapter in listed.json()["data"]] == ["alpha"]

    loaded = await client.post(
        ADAPTERS, json={"name": "beta", "path": str(adapter_dirs["beta"])}, headers=admin.headers
    )
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["model"] == "tiny:beta"
    assert await _models(client, admin) == ["tiny", "tiny:alpha", "tiny:beta"]

    answers = {model: await _chat(client, admin, model) for model in ("tiny", "tiny:alpha", "tiny:beta")}
    for model, response in answers.items():
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
    assert len({response.json()["choices"][0]["message"]["content"] for response in answers.values()}) > 1

    removed = await client.delete(f"{ADAPTERS}/beta", headers=admin.headers)
    assert removed.status_code == 204
    assert await _models(client, admin) == ["tiny", "tiny:alpha"]
    assert_error(await _chat(client, admin, "tiny:beta"), 404)

    audit = await client.get("/api/admin/audit", params={"action": "adapter.unloaded"}, headers=admin.headers)
    assert [event["details"]["adapter"] for event in audit.json()["data"]] == ["beta"]


async def test_bad_adapter_requests_get_clear_errors(
    server: tuple[httpx.AsyncClient, Session], adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    client, admin = server
    beta = str(adapter_dirs["beta"])

    assert_error(await client.post(ADAPTERS, json={"name": "x"}, headers=admin.headers), 400)
    assert_error(
        await client.post(ADAPTERS, json={"name": "bad name", "path": beta}, headers=admin.headers), 400
    )
    assert_error(await client.post(ADAPTERS, json={"name": "rel", "path": "a/b"}, headers=admin.headers), 400)
    error = assert_error(
        await client.post(ADAPTERS, json={"name": "empty", "path": str(tmp_path)}, headers=admin.headers), 400
    )
    assert "adapter_config.json" in str(error["message"])
    assert_error(
        await client.post(ADAPTERS, json={"name": "alpha", "path": beta}, headers=admin.headers), 409
    )
    other = "/api/admin/models/nope/adapters"
    assert_error(await client.post(other, json={"name": "b", "path": beta}, headers=admin.headers), 404)
    assert_error(await client.delete(f"{ADAPTERS}/never", headers=admin.headers), 404)


async def test_non_admins_are_refused(
    server: tuple[httpx.AsyncClient, Session], adapter_dirs: dict[str, Path]
) -> None:
    client, _ = server
    user = await sign_up(client, "user@example.com")
    body = {"name": "beta", "path": str(adapter_dirs["beta"])}

    assert_error(await client.get(ADAPTERS, headers=user.headers), 403)
    assert_error(await client.post(ADAPTERS, json=body, headers=user.headers), 403)
    assert_error(await client.delete(f"{ADAPTERS}/alpha", headers=user.headers), 403)
    assert "tiny:alpha" in await _models(client, user)
