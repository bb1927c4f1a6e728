"""The authorisation matrix: every route of the app × {anonymous, owner, another user, admin}.

Routes are enumerated from the app's OpenAPI document (every route of
`app.routes`, included routers too), so a route added later is covered
without editing this file: it must refuse anonymous callers (unless listed as
public), refuse non-admins under `/api/admin`, answer another user's resource
ids without leaking them, and answer every failure with an OpenAI-shaped JSON
error. Every request runs with a fresh sign-in, so routes that end sessions
(`logout-all`, `password`) cannot spoil the next check.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.connection.http.inprocess import PASSWORD, app_client, app_settings, cheap_passwords, sign_up
from ziggurat.app import build_app

UNCHECKED = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics"}
PUBLIC = {
    ("GET", "/api/auth/providers"),
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/oidc/login"),
    ("GET", "/api/auth/oidc/callback"),
}
SECRET_TITLE = "alice-private-title-7f3a"
SECRET_TEXT = "alice-private-message-91bd"


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient
    ids: dict[str, str]

    async def headers(self, email: str | None) -> dict[str, str]:
        if email is None:
            return {}
        response = await self.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def world(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    cheap_passwords(monkeypatch)
    app = build_app(app_settings(tmp_path, database_url))
    async with app_client(app) as client:
        admin = await sign_up(client, "admin@example.com")
        alice = await sign_up(client, "alice@example.com")
        await sign_up(client, "bob@example.com")
        conversation = await client.post(
            "/api/conversations", json={"title": SECRET_TITLE}, headers=alice.headers
        )
        conversation_id = conversation.json()["id"]
        posted = await client.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": SECRET_TEXT, "max_tokens": 4},
            headers=alice.headers,
        )
        assert posted.status_code == 200, posted.text
        detail = (await client.get(f"/api/conversations/{conversation_id}", headers=alice.headers)).json()
        key = (await client.post("/api/keys", json={"name": "k"}, headers=alice.headers)).json()
        invitation = await client.post(
            "/api/admin/invitations", json={"email": "carol@example.com"}, headers=admin.headers
        )
        entry = await client.post("/api/admin/models", json={"name": "ziggurat-demo"}, headers=admin.headers)
        preset = await client.post(
            "/api/presets", json={"name": "p", "system_prompt": SECRET_TEXT}, headers=alice.headers
        )
        assert preset.status_code == 201, preset.text
        answer_id = detail["messages"][-1]["id"]
        feedback = await client.post(
            f"/api/messages/{answer_id}/feedback",
            json={"thumb": "down", "comment": SECRET_TEXT},
            headers=alice.headers,
        )
        assert feedback.status_code in (200, 201), feedback.text
        ids = {
            "conversation_id": conversation_id,
            "message_id": detail["messages"][0]["id"],
            "key_id": key["id"],
            "user_id": alice.user_id,
            "name": "user",
            "invitation_id": invitation.json()["id"],
            "entry_id": entry.json()["id"],
            "preset_id": preset.json()["id"],
        }
        yield World(app=app, client=client, ids=ids)


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    # The OpenAPI document is the public list of every route, however routers are nested.
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path not in UNCHECKED
        for method in operations
    ]
    # Destructive calls last, so they cannot remove what the other checks look at.
    return sorted(found, key=lambda item: (item[0] == "DELETE", item[1], item[0]))


def _path(template: str, ids: dict[str, str], *, own: bool) -> str:
    path = template
    for name in [part[1:-1].split(":")[0] for part in template.split("/") if part.startswith("{")]:
        value = ids.get(name, str(uuid.uuid4())) if own else str(uuid.uuid4())
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    return path


async def _call(world: World, method: str, path: str, email: str | None) -> httpx.Response:
    headers = await world.headers(email)
    json_body = {} if method in {"POST", "PUT", "PATCH"} else None
    return await world.client.request(method, path, headers=headers, json=json_body)


def _check_shape(response: httpx.Response, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), where
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, where


def _check_no_leak(response: httpx.Response, where: str) -> None:
    for secret in ("alice@example.com", SECRET_TITLE, SECRET_TEXT):
        assert secret not in response.text, f"{where} leaked {secret}"


async def test_every_route_enforces_authentication_roles_and_ownership(world: World) -> None:
    routes = _routes(world.app)
    assert ("GET", "/api/admin/users") in routes and ("POST", "/v1/chat/completions") in routes
    for method, template in routes:
        is_public = (method, template) in PUBLIC
        is_admin_route = template.startswith("/api/admin")
        own_path = _path(template, world.ids, own=True)
        where = f"{method} {template}"

        anonymous = await _call(world, method, own_path, None)
        _check_shape(anonymous, where + " as anonymous")
        _check_no_leak(anonymous, where + " as anonymous")
        if not is_public:
            assert anonymous.status_code == 401, f"{where} answered {anonymous.status_code} to anonymous"

        # Bob is another user: alice's ids must look like nothing at all.
        other = await _call(world, method, own_path, "bob@example.com")
        _check_shape(other, where + " as another user")
        _check_no_leak(other, where + " as another user")
        if is_admin_route:
            assert other.status_code == 403, f"{where} answered {other.status_code} to a non-admin"
        elif "{" in template and not is_public:
            assert other.status_code in {400, 404}, f"{where} answered {other.status_code} to another user"

        # The admin is another user too, outside /api/admin; inside, deletes use unknown ids.
        admin_path = _path(template, world.ids, own=not (is_admin_route and method == "DELETE"))
        admin = await _call(world, method, admin_path, "admin@example.com")
        _check_shape(admin, where + " as admin")
        if not is_public:
            assert admin.status_code not in {401, 403}, f"{where} refused the admin: {admin.text}"
        if not is_admin_route:
            _check_no_leak(admin, where + " as admin")
            if "{" in template and not is_public:
                assert admin.status_code in {400, 404}, f"{where} showed alice's resource to the admin"

        owner = await _call(world, method, own_path, "alice@example.com")
        _check_shape(owner, where + " as owner")
        if is_admin_route:
            assert owner.status_code == 403, f"{where} answered {owner.status_code} to a non-admin"
        elif not is_public:
            assert owner.status_code not in {401, 403}, f"{where} refused its owner: {owner.text}"


async def test_bad_input_on_every_route_is_a_json_4xx(world: World) -> None:
    headers = await world.headers("admin@example.com")
    paths = world.app.openapi()["paths"]
    for method, template in _routes(world.app):
        where = f"{method} {template}"
        if "requestBody" in paths[template][method.lower()]:
            garbage = await world.client.request(
                method, _path(template, world.ids, own=True), content=b"{not json",
                headers={**headers, "Content-Type": "application/json"},
            )  # fmt: skip
            _check_shape(garbage, where + " with a broken body")
            assert 400 <= garbage.status_code < 500, where
        if "{" in template:
            long_ids = {name: "x" * 300 for name in world.ids}
            too_long = await world.client.request(
                method, _path(template, long_ids, own=True), headers=headers,
                json={} if method in {"POST", "PUT", "PATCH"} else None,
            )  # fmt: skip
            _check_shape(too_long, where + " with an oversized id")
            assert 400 <= too_long.status_code < 500, where
