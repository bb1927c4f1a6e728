"""Accounts over HTTP: lockout, password change, sign out everywhere, registration rules, invitations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.connection.http.inprocess import (
    PASSWORD,
    app_client,
    app_settings,
    assert_error,
    cheap_passwords,
    sign_up,
)
from ziggurat.app import build_app


@pytest.fixture
async def client(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    settings = app_settings(
        tmp_path, database_url, auth={"lockout_max_failures": 3, "lockout_ip_max_failures": 6}
    )
    async with app_client(build_app(settings)) as client:
        yield client


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


async def test_repeated_failures_lock_the_account_without_revealing_it_exists(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "admin@example.com")
    await sign_up(client, "victim@example.com")
    for _ in range(3):
        assert_error(await _login(client, "victim@example.com", "wrong password"), 401)
        assert_error(await _login(client, "ghost@example.com", "wrong password"), 401)

    locked = await _login(client, "victim@example.com", PASSWORD)
    ghost = await _login(client, "ghost@example.com", PASSWORD)
    for response in (locked, ghost):
        assert_error(response, 429, "rate_limit_error")
        assert int(response.headers["Retry-After"]) >= 1
    assert locked.json() == ghost.json()
    # Six failures came from this client's address: it is locked for every account now.
    assert_error(await _login(client, "admin@example.com", PASSWORD), 429)


async def test_a_success_resets_the_account_count(client: httpx.AsyncClient) -> None:
    await sign_up(client, "a@example.com")
    for _ in range(2):
        assert_error(await _login(client, "a@example.com", "wrong password"), 401)
    assert (await _login(client, "a@example.com", PASSWORD)).status_code == 200
    for _ in range(2):
        assert_error(await _login(client, "a@example.com", "wrong password"), 401)
    assert (await _login(client, "a@example.com", PASSWORD)).status_code == 200


async def test_password_change_ends_every_session_and_returns_a_new_one(client: httpx.AsyncClient) -> None:
    session = await sign_up(client, "a@example.com")
    other = (await _login(client, "a@example.com", PASSWORD)).json()

    wrong = await client.post(
        "/api/auth/password",
        json={"current_password": "not it at all", "new_password": "a brand new secret"},
        headers=session.headers,
    )
    assert_error(wrong, 400)
    weak = await client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "password123"},
        headers=session.headers,
    )
    assert_error(weak, 400)
    changed = await client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
        headers=session.headers,
    )
    assert changed.status_code == 200, changed.text

    assert_error(await client.get("/api/auth/me", headers=session.headers), 401)
    for refresh_token in (session.refresh_token, other["refresh_token"]):
        assert_error(await client.post("/api/auth/refresh", json={"refresh_token": refresh_token}), 401)
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200
    assert_error(await _login(client, "a@example.com", PASSWORD), 401)
    assert (await _login(client, "a@example.com", "a brand new secret")).status_code == 200


async def test_logout_all_kills_access_and_refresh_tokens_but_not_api_keys(client: httpx.AsyncClient) -> None:
    session = await sign_up(client, "a@example.com")
    key = (await client.post("/api/keys", json={"name": "k"}, headers=session.headers)).json()["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    assert_error(await client.post("/api/auth/logout-all", headers=key_headers), 403)

    assert (await client.post("/api/auth/logout-all", headers=session.headers)).status_code == 204
    assert_error(await client.get("/api/auth/me", headers=session.headers), 401)
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": session.refresh_token}), 401)
    assert (await client.get("/api/auth/me", headers=key_headers)).status_code == 200


async def test_providers_describe_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/auth/providers")
    assert response.json() == {"password": True, "registration_open": True, "oidc": None}
    assert_error(await client.get("/api/auth/oidc/login"), 404)


async def test_closed_registration_admits_only_invited_people(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    settings = app_settings(tmp_path, database_url, auth={"allow_registration": False})
    async with app_client(build_app(settings)) as client:
        admin = await sign_up(client, "root@example.com")
        refused = await client.post(
            "/api/auth/register", json={"email": "b@example.com", "password": PASSWORD}
        )
        assert_error(refused, 403, "permission_error")

        created = await client.post(
            "/api/admin/invitations", json={"email": "B@example.com", "role": "admin"}, headers=admin.headers
        )
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        wrong_email = await client.post(
            "/api/auth/register", json={"email": "c@example.com", "password": PASSWORD, "invitation": token}
        )
        assert_error(wrong_email, 403)
        invited = await sign_up(client, "b@example.com", invitation=token)
        me = await client.get("/api/auth/me", headers=invited.headers)
        assert me.json()["role"] == "admin"
        again = await client.post(
            "/api/auth/register", json={"email": "b2@example.com", "password": PASSWORD, "invitation": token}
        )
        assert_error(again, 403)
        status = await client.get(f"/api/admin/invitations/{created.json()['id']}", headers=admin.headers)
        assert status.json()["status"] == "accepted" and status.json()["accepted_by"] == invited.user_id


async def test_an_email_domain_allow_list_limits_sign_up(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    settings = app_settings(tmp_path, database_url, auth={"allowed_email_domains": ["corp.example"]})
    async with app_client(build_app(settings)) as client:
        await sign_up(client, "first@anywhere.example")
        outsider = await client.post(
            "/api/auth/register", json={"email": "x@gmail.example", "password": PASSWORD}
        )
        assert_error(outsider, 403)
        await sign_up(client, "someone@CORP.example")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "password": "password1"},
        {"email": "a@example.com", "password": "a@example.com"},
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com", "password": "x" * 1025},
        {"email": "a@example.com", "password": PASSWORD, "invitation": ""},
        {"email": "a@example.com", "password": PASSWORD, "extra": 1},
    ],
)
async def test_bad_registrations_get_400(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    assert_error(await client.post("/api/auth/register", json=body), 400, "invalid_request_error")
