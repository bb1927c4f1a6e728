"""Cookie sessions for the browser: HttpOnly refresh cookie, double-submit CSRF, rotation, sign-out, OIDC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.connection.http.inprocess import (
    MODEL,
    PASSWORD,
    Session,
    app_client,
    app_settings,
    assert_error,
    cheap_passwords,
    sign_up,
)
from tests.connection.http.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcTestProvider, running_provider
from ziggurat.app import build_app
from ziggurat.config import Settings

COOKIE_MODE = {"X-Ziggurat-Session": "cookie"}
REFRESH_TTL_S = 3600


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    database = f"sqlite+aiosqlite:///{tmp_path / 'ziggurat.db'}"
    return app_settings(tmp_path, database, auth={"refresh_token_ttl_s": REFRESH_TTL_S}, **overrides)


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    async with app_client(build_app(_settings(tmp_path))) as client:
        yield client


@pytest.fixture
async def account(client: httpx.AsyncClient) -> Session:
    session = await sign_up(client, "web@example.com")
    client.cookies.clear()
    return session


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie of the response by cookie name (the whole header value, attributes included)."""
    return {value.split("=", 1)[0]: value for value in response.headers.get_list("set-cookie")}


def _attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def _csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies["ziggurat_csrf"]}


async def _cookie_login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    response = await client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=COOKIE_MODE
    )
    assert response.status_code == 200, response.text
    return response


async def test_cookie_login_sets_both_cookies_and_keeps_the_refresh_token_out_of_the_body(
    client: httpx.AsyncClient, account: Session
) -> None:
    response = await _cookie_login(client, account.email)
    body = response.json()
    assert body["refresh_token"] == "" and body["access_token"]
    cookies = _set_cookies(response)
    refresh = _attributes(cookies["ziggurat_refresh"])
    assert {"httponly", "samesite=strict", "path=/api/auth", f"max-age={REFRESH_TTL_S}"} <= refresh
    assert "secure" not in refresh  # plain http
    csrf = _attributes(cookies["ziggurat_csrf"])
    assert {"samesite=strict", "path=/", f"max-age={REFRESH_TTL_S}"} <= csrf
    assert "httponly" not in csrf
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["email"] == account.email


async def test_cookies_are_secure_over_https_or_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    app = build_app(_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
            session = await sign_up(client, "tls@example.com")
            response = await _cookie_login(client, session.email)
    assert all("secure" in _attributes(value) for value in _set_cookies(response).values())

    async with app_client(build_app(_settings(tmp_path / "forced", web={"cookie_secure": True}))) as client:
        registered = await client.post(
            "/api/auth/register", json={"email": "f@example.com", "password": PASSWORD}, headers=COOKIE_MODE
        )
    assert registered.status_code == 201 and registered.json()["tokens"]["refresh_token"] == ""
    cookies = _set_cookies(registered)
    assert set(cookies) == {"ziggurat_refresh", "ziggurat_csrf"}
    assert all("secure" in _attributes(value) for value in cookies.values())


async def test_refresh_with_the_cookie_and_csrf_header_rotates_both_and_the_old_token_dies(
    client: httpx.AsyncClient, account: Session
) -> None:
    first = await _cookie_login(client, account.email)
    old_refresh, old_csrf = client.cookies["ziggurat_refresh"], client.cookies["ziggurat_csrf"]
    refreshed = await client.post("/api/auth/refresh", json={}, headers=_csrf(client))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] == ""
    assert refreshed.json()["access_token"] not in ("", first.json()["access_token"])
    assert set(_set_cookies(refreshed)) == {"ziggurat_refresh", "ziggurat_csrf"}
    assert client.cookies["ziggurat_refresh"] != old_refresh and client.cookies["ziggurat_csrf"] != old_csrf
    no_body = await client.post("/api/auth/refresh", headers=_csrf(client))  # no body at all: the same
    assert no_body.status_code == 200, no_body.text
    spent = await client.post("/api/auth/refresh", json={"refresh_token": old_refresh})
    assert_error(spent, 401)


async def test_refresh_by_cookie_without_the_right_csrf_token_or_origin_is_refused(
    client: httpx.AsyncClient, account: Session
) -> None:
    await _cookie_login(client, account.email)
    csrf = _csrf(client)
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        refused = assert_error(await client.post("/api/auth/refresh", json={}, headers=headers), 403)
        assert refused["code"] == "csrf_failed" and refused["type"] == "permission_error"
    for origin in ("https://evil.example", "http://test.evil.example", "null", "https://test"):
        refused = assert_error(
            await client.post("/api/auth/refresh", json={}, headers={**csrf, "Origin": origin}), 403
        )
        assert refused["code"] == "csrf_failed", origin
    cookie_only = {"Cookie": f"ziggurat_refresh={client.cookies['ziggurat_refresh']}"}
    refused = assert_error(await client.post("/api/auth/refresh", headers={**cookie_only, **csrf}), 403)
    assert refused["code"] == "csrf_failed"  # the CSRF cookie missing: nothing to compare with
    own = await client.post("/api/auth/refresh", json={}, headers={**csrf, "Origin": "http://test"})
    assert own.status_code == 200, own.text


async def test_a_trusted_origin_may_use_the_cookie_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    settings = _settings(tmp_path, web={"trusted_origins": ["https://chat.example.com/"]})
    async with app_client(build_app(settings)) as client:
        session = await sign_up(client, "o@example.com")
        login = await client.post(
            "/api/auth/login",
            json={"email": session.email, "password": PASSWORD},
            headers={**COOKIE_MODE, "Origin": "https://evil.example"},
        )
        assert assert_error(login, 403)["code"] == "csrf_failed"  # no login CSRF from another site
        await client.post(
            "/api/auth/login",
            json={"email": session.email, "password": PASSWORD},
            headers={**COOKIE_MODE, "Origin": "https://chat.example.com"},
        )
        refreshed = await client.post(
            "/api/auth/refresh", json={}, headers={**_csrf(client), "Origin": "https://chat.example.com"}
        )
        assert refreshed.status_code == 200, refreshed.text


async def test_refresh_without_a_cookie_or_body_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/api/auth/refresh", json={}), 401, "authentication_error")
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": ""}), 400)
    assert_error(await client.post("/api/auth/refresh", json={"other": 1}), 400)


async def test_clients_that_send_the_token_in_the_body_work_as_before(
    client: httpx.AsyncClient, account: Session
) -> None:
    login = await client.post("/api/auth/login", json={"email": account.email, "password": PASSWORD})
    assert login.json()["refresh_token"] and "set-cookie" not in login.headers
    refreshed = await client.post("/api/auth/refresh", json={"refresh_token": login.json()["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"]
    assert "set-cookie" not in refreshed.headers
    logout = await client.post("/api/auth/logout", json={"refresh_token": refreshed.json()["refresh_token"]})
    assert logout.status_code == 204 and "set-cookie" not in logout.headers
    dead = await client.post("/api/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]})
    assert_error(dead, 401)


async def test_logout_by_cookie_needs_csrf_then_revokes_the_session_and_clears_both_cookies(
    client: httpx.AsyncClient, account: Session
) -> None:
    await _cookie_login(client, account.email)
    refresh_token = client.cookies["ziggurat_refresh"]
    assert assert_error(await client.post("/api/auth/logout", json={}), 403)["code"] == "csrf_failed"
    logout = await client.post("/api/auth/logout", json={}, headers=_csrf(client))
    assert logout.status_code == 204
    cleared = _set_cookies(logout)
    assert set(cleared) == {"ziggurat_refresh", "ziggurat_csrf"}
    assert all("max-age=0" in _attributes(value) for value in cleared.values())
    assert "path=/api/auth" in _attributes(cleared["ziggurat_refresh"])
    assert not client.cookies
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": refresh_token}), 401)
    again = await client.post("/api/auth/logout")  # signed out already: nothing to check, still clears
    assert again.status_code == 204 and set(_set_cookies(again)) == {"ziggurat_refresh", "ziggurat_csrf"}


async def test_a_password_change_in_a_cookie_session_moves_the_cookies_to_the_new_session(
    client: httpx.AsyncClient, account: Session
) -> None:
    login = await _cookie_login(client, account.email)
    old_refresh = client.cookies["ziggurat_refresh"]
    changed = await client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "another horse battery"},
        headers={**COOKIE_MODE, "Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["refresh_token"] == ""
    assert client.cookies["ziggurat_refresh"] != old_refresh
    assert (await client.post("/api/auth/refresh", json={}, headers=_csrf(client))).status_code == 200


async def test_the_model_picker_lists_only_models_the_role_may_use(client: httpx.AsyncClient) -> None:
    admin = await sign_up(client, "root@example.com")
    user = await sign_up(client, "trial@example.com")
    client.cookies.clear()
    access = (await _cookie_login(client, user.email)).json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    listed = await client.get("/v1/models", headers=bearer)
    assert [model["id"] for model in listed.json()["data"]] == [MODEL]
    assert (
        await client.post(
            "/api/admin/roles", json={"name": "trial", "allowed_models": []}, headers=admin.headers
        )
    ).is_success
    moved = await client.patch(
        f"/api/admin/users/{user.user_id}", json={"role": "trial"}, headers=admin.headers
    )
    assert moved.status_code == 200, moved.text
    refreshed = await client.post("/api/auth/refresh", json={}, headers=_csrf(client))
    bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (await client.get("/v1/models", headers=bearer)).json()["data"] == []


@pytest.fixture
async def oidc_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    async with running_provider() as provider:
        settings = _settings(tmp_path, oidc=_oidc_settings(provider))
        async with app_client(build_app(settings)) as client:
            yield client


def _oidc_settings(provider: OidcTestProvider) -> dict[str, object]:
    return {
        "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": "http://test/api/auth/oidc/callback",
    }  # fmt: skip


async def _oidc_callback(client: httpx.AsyncClient, login_path: str) -> httpx.Response:
    """Start the sign-in, let the provider approve it, and open the callback as the browser would."""
    start = await client.get(login_path)
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(start.headers["location"])
    assert approved.status_code == 302
    return await client.get(approved.headers["location"])


async def test_oidc_sign_in_from_the_web_app_redirects_to_next_with_a_cookie_session(
    oidc_client: httpx.AsyncClient,
) -> None:
    callback = await _oidc_callback(oidc_client, "/api/auth/oidc/login?next=" + quote("/c/abc?x=1"))
    assert callback.status_code == 302 and callback.headers["location"] == "/c/abc?x=1"
    cookies = _set_cookies(callback)
    assert {"httponly", "samesite=strict", "path=/api/auth"} <= _attributes(cookies["ziggurat_refresh"])
    assert "httponly" not in _attributes(cookies["ziggurat_csrf"])
    assert "ziggurat_oidc" in cookies and "max-age=0" in _attributes(cookies["ziggurat_oidc"])
    started = await oidc_client.post("/api/auth/refresh", json={}, headers=_csrf(oidc_client))
    assert started.status_code == 200, started.text
    me = await oidc_client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {started.json()['access_token']}"}
    )
    assert me.json()["email"] == "sso@example.com"


async def test_oidc_callback_without_next_answers_json_as_before(oidc_client: httpx.AsyncClient) -> None:
    callback = await _oidc_callback(oidc_client, "/api/auth/oidc/login")
    assert callback.status_code == 200 and callback.json()["refresh_token"]
    assert "ziggurat_refresh" not in _set_cookies(callback)


@pytest.mark.parametrize(
    "next_path",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "c/abc", "/a b"],
)
async def test_oidc_next_must_be_a_path_on_this_server(
    oidc_client: httpx.AsyncClient, next_path: str
) -> None:
    refused = await oidc_client.get("/api/auth/oidc/login", params={"next": next_path})
    assert assert_error(refused, 400)["param"] == "next"


async def test_me_says_whether_the_session_may_use_the_admin_pages(client: httpx.AsyncClient) -> None:
    admin = await sign_up(client, "root@example.com")
    user = await sign_up(client, "user@example.com")
    admin_me = (await client.get("/api/auth/me", headers=admin.headers)).json()
    user_me = (await client.get("/api/auth/me", headers=user.headers)).json()
    assert admin_me["is_admin"] is True and admin_me["email"] == admin.email
    assert user_me["is_admin"] is False and user_me["role"] == "user"
    chat_key = await client.post("/api/keys", json={"name": "k", "scopes": ["chat"]}, headers=admin.headers)
    key_me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {chat_key.json()['key']}"})
    assert key_me.json()["is_admin"] is False  # the credential's scopes count, not only the role
