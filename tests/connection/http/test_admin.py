"""The admin API: users, roles and model access on /v1, the registry, invitations, usage, audit, export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.connection.http.inprocess import (
    MODEL,
    Session,
    app_client,
    app_settings,
    assert_error,
    cheap_passwords,
    sign_up,
)
from ziggurat.app import build_app
from ziggurat.connection.http.deps import Services


@dataclass
class Admin:
    app: FastAPI
    client: httpx.AsyncClient
    admin: Session

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def get(self, path: str, **params: object) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.admin.headers)

    async def send(self, method: str, path: str, body: object = None) -> httpx.Response:
        return await self.client.request(method, path, json=body, headers=self.admin.headers)


@pytest.fixture
async def admin(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Admin]:
    cheap_passwords(monkeypatch)
    app = build_app(app_settings(tmp_path, database_url))
    async with app_client(app) as client:
        yield Admin(app=app, client=client, admin=await sign_up(client, "root@example.com"))


async def _chat(client: httpx.AsyncClient, headers: dict[str, str], model: str = MODEL) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return await client.post("/v1/chat/completions", json=body, headers=headers)


async def _models(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/v1/models", headers=headers)
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()["data"]]


async def test_users_are_listed_newest_first_in_pages_and_searched_by_email(admin: Admin) -> None:
    for name in ("ann", "bob", "cat", "dan"):
        await sign_up(admin.client, f"{name}@example.com")
    first = (await admin.get("/api/admin/users", limit=2)).json()
    second = (await admin.get("/api/admin/users", limit=2, cursor=first["next_cursor"])).json()
    third = (await admin.get("/api/admin/users", limit=2, cursor=second["next_cursor"])).json()
    emails = [user["email"] for page in (first, second, third) for user in page["data"]]
    assert emails == [
        "dan@example.com",
        "cat@example.com",
        "bob@example.com",
        "ann@example.com",
        "root@example.com",
    ]
    assert third["next_cursor"] is None
    found = (await admin.get("/api/admin/users", email="BO")).json()["data"]
    assert [user["email"] for user in found] == ["bob@example.com"]
    assert (await admin.get("/api/admin/users", email="%")).json()["data"] == []
    assert_error(await admin.get("/api/admin/users", cursor="garbage!"), 400)


async def test_disabling_a_user_locks_them_out_at_once_and_enabling_lets_them_back(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    key = (await admin.client.post("/api/keys", json={"name": "k"}, headers=user.headers)).json()["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    assert (await _chat(admin.client, key_headers)).status_code == 200

    disabled = await admin.send("PATCH", f"/api/admin/users/{user.user_id}", {"is_active": False})
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False
    assert_error(await admin.client.get("/api/auth/me", headers=user.headers), 401)
    assert_error(await _chat(admin.client, key_headers), 401)
    assert_error(
        await admin.client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}), 401
    )

    await admin.send("PATCH", f"/api/admin/users/{user.user_id}", {"is_active": True})
    assert (await _chat(admin.client, key_headers)).status_code == 200


async def test_the_last_admin_cannot_be_disabled_demoted_or_deleted(admin: Admin) -> None:
    path = f"/api/admin/users/{admin.admin.user_id}"
    assert_error(await admin.send("PATCH", path, {"is_active": False}), 409)
    assert_error(await admin.send("PATCH", path, {"role": "user"}), 409)
    assert_error(await admin.send("DELETE", path), 409)
    other = await sign_up(admin.client, "second@example.com")
    assert (
        await admin.send("PATCH", f"/api/admin/users/{other.user_id}", {"role": "admin"})
    ).status_code == 200
    assert (await admin.send("PATCH", path, {"role": "user"})).json()["role"] == "user"
    assert_error(await admin.get("/api/admin/users"), 403)  # demoted at once, same token


async def test_a_role_limits_which_models_its_users_see_and_use(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    created = await admin.send(
        "POST", "/api/admin/roles", {"name": "trial", "allowed_models": [], "daily_tokens": 10}
    )
    assert created.status_code == 201 and created.json()["is_builtin"] is False
    assert_error(await admin.send("POST", "/api/admin/roles", {"name": "trial"}), 409)
    await admin.send("PATCH", f"/api/admin/users/{user.user_id}", {"role": "trial"})

    assert await _models(admin.client, user.headers) == []
    refused = await _chat(admin.client, user.headers)
    assert assert_error(refused, 404)["code"] == "model_not_found"
    unknown = assert_error(await _chat(admin.client, user.headers, "no-such-model"), 404)
    assert unknown["code"] == "model_not_found" and unknown["type"] == refused.json()["error"]["type"]

    await admin.send("PATCH", "/api/admin/roles/trial", {"allowed_models": [MODEL]})
    assert await _models(admin.client, user.headers) == [MODEL]
    assert (await _chat(admin.client, user.headers)).status_code == 200

    await admin.send("PATCH", "/api/admin/roles/trial", {"permissions": []})
    assert_error(await _chat(admin.client, user.headers), 403)
    assert_error(await admin.send("DELETE", "/api/admin/roles/trial"), 409)  # still held
    await admin.send("PATCH", f"/api/admin/users/{user.user_id}", {"role": "user"})
    assert (await admin.send("DELETE", "/api/admin/roles/trial")).status_code == 204
    assert_error(await admin.send("DELETE", "/api/admin/roles/user"), 409)
    assert_error(await admin.send("PATCH", "/api/admin/roles/admin", {"permissions": ["chat"]}), 409)
    roles = [role["name"] for role in (await admin.get("/api/admin/roles")).json()["data"]]
    assert roles == ["admin", "user"]


async def test_the_registry_narrows_a_model_to_roles_or_switches_it_off(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    entry = await admin.send(
        "POST", "/api/admin/models", {"name": MODEL, "allowed_roles": ["admin"], "context_length": 1234}
    )
    assert entry.status_code == 201 and entry.json()["is_served"] is True
    assert await _models(admin.client, user.headers) == []
    assert_error(await _chat(admin.client, user.headers), 404)
    listed = (await admin.client.get("/v1/models", headers=admin.admin.headers)).json()["data"]
    assert listed[0]["context_length"] == 1234

    await admin.send(
        "PATCH", f"/api/admin/models/{entry.json()['id']}", {"allowed_roles": None, "enabled": False}
    )
    assert await _models(admin.client, admin.admin.headers) == []
    assert (await admin.send("DELETE", f"/api/admin/models/{entry.json()['id']}")).status_code == 204
    assert await _models(admin.client, user.headers) == [MODEL]
    assert_error(await admin.send("POST", "/api/admin/models", {"name": ""}), 400)


async def test_usage_is_recorded_per_user_and_model_by_day(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    for _ in range(2):
        assert (await _chat(admin.client, user.headers)).status_code == 200
    stream = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    assert (
        await admin.client.post("/v1/chat/completions", json=stream, headers=user.headers)
    ).status_code == 200
    await admin.services.application.usage.flush()

    by_user = (await admin.get("/api/admin/usage", by="user")).json()["data"]
    assert len(by_user) == 1 and by_user[0]["user_id"] == user.user_id and by_user[0]["requests"] == 3
    assert by_user[0]["completion_tokens"] > 0
    by_model = (await admin.get("/api/admin/usage", by="model", user_id=user.user_id)).json()["data"]
    assert [(row["model"], row["requests"]) for row in by_model] == [(MODEL, 3)]
    assert_error(await admin.get("/api/admin/usage", since="2025-02-01", until="2025-01-01"), 400)
    assert_error(await admin.get("/api/admin/usage", by="planet"), 400)


async def test_the_audit_log_records_security_events_and_filters_them(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    await admin.client.post("/api/auth/login", json={"email": "u@example.com", "password": "wrong password"})
    await admin.send("PATCH", f"/api/admin/users/{user.user_id}", {"is_active": False})

    events = (await admin.get("/api/admin/audit", user_id=user.user_id, limit=100)).json()["data"]
    actions = [event["action"] for event in events]
    assert actions == ["user.disabled", "login.failed", "user.registered"]
    assert events[0]["actor_id"] == admin.admin.user_id
    only = (await admin.get("/api/admin/audit", action="login.failed")).json()["data"]
    assert [event["user_id"] for event in only] == [user.user_id]
    page = (await admin.get("/api/admin/audit", limit=1)).json()
    assert len(page["data"]) == 1 and page["next_cursor"]
    rest = (await admin.get("/api/admin/audit", limit=100, cursor=page["next_cursor"])).json()["data"]
    assert page["data"][0]["id"] not in {event["id"] for event in rest}
    assert (await admin.get("/api/admin/audit", since="2000-01-01T00:00:00")).status_code == 200


async def test_export_then_delete_all_data_of_a_user(admin: Admin) -> None:
    user = await sign_up(admin.client, "u@example.com")
    conversation = await admin.client.post("/api/conversations", json={"title": "mine"}, headers=user.headers)
    await admin.client.post(
        f"/api/conversations/{conversation.json()['id']}/messages",
        json={"content": "hello there", "max_tokens": 3},
        headers=user.headers,
    )
    await admin.client.post("/api/keys", json={"name": "k"}, headers=user.headers)

    export = await admin.get(f"/api/admin/users/{user.user_id}/export")
    assert export.status_code == 200
    body = export.json()
    assert body["user"]["email"] == "u@example.com"
    assert [row["title"] for row in body["tables"]["conversations"]] == ["mine"]
    assert "hello there" in [row["content"] for row in body["tables"]["messages"]]
    assert [row["name"] for row in body["tables"]["api_keys"]] == ["k"]
    assert "key_hash" not in export.text and "password_hash" not in export.text

    assert (await admin.send("DELETE", f"/api/admin/users/{user.user_id}")).status_code == 204
    assert_error(await admin.get(f"/api/admin/users/{user.user_id}"), 404)
    assert_error(await admin.client.get("/api/auth/me", headers=user.headers), 401)
    deleted = (await admin.get("/api/admin/audit", action="user.deleted")).json()["data"]
    assert [event["user_id"] for event in deleted] == [user.user_id]


async def test_numbers_beyond_what_the_database_holds_are_a_400_not_a_500(admin: Admin) -> None:
    # Found by fuzzing the OpenAPI schema: 2**40 overflowed the integer column.
    role = await admin.send("POST", "/api/admin/roles", {"name": "huge", "daily_tokens": 2**40})
    assert role.status_code == 400, role.text
    assert role.json()["error"]["param"] == "daily_tokens"
    entry = await admin.send("POST", "/api/admin/models", {"name": "ziggurat-demo", "context_length": 2**40})
    assert entry.status_code == 400, entry.text
    seed = await admin.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": 2**70},
        headers=admin.admin.headers,
    )
    assert seed.status_code == 400, seed.text
