"""OIDC sign-in against a local provider: the whole browser round trip, and every way it must fail."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.connection.http.inprocess import app_client, app_settings, assert_error, cheap_passwords, sign_up
from tests.connection.http.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcTestProvider, running_provider
from ziggurat.app import build_app

CALLBACK = "http://test/api/auth/oidc/callback"


@pytest.fixture
async def provider() -> AsyncIterator[OidcTestProvider]:
    async with running_provider() as provider:
        yield provider


def _settings(tmp_path: Path, database_url: str, provider: OidcTestProvider, **auth: object) -> object:
    oidc = {
        "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": CALLBACK, "button_name": "Company SSO",
    }  # fmt: skip
    return app_settings(tmp_path, database_url, oidc=oidc, auth=auth)


@pytest.fixture
async def client(
    tmp_path: Path, database_url: str, provider: OidcTestProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    async with app_client(build_app(_settings(tmp_path, database_url, provider))) as client:  # type: ignore[arg-type]
        yield client


async def _authorize(client: httpx.AsyncClient) -> str:
    """Start a sign-in and let the provider approve it; the callback URL the browser would open."""
    start = await client.get("/api/auth/oidc/login")
    assert start.status_code == 302, start.text
    assert "ziggurat_oidc" in start.headers["set-cookie"] and "HttpOnly" in start.headers["set-cookie"]
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(start.headers["location"])
    assert approved.status_code == 302
    callback: str = approved.headers["location"]
    assert callback.startswith(CALLBACK)
    return callback


async def _sign_in(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(await _authorize(client))


async def _me(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    me = await client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.status_code == 200
    body: dict[str, object] = me.json()
    return body


async def test_a_new_person_gets_an_account_and_signs_in_again_as_the_same_user(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    providers = (await client.get("/api/auth/providers")).json()
    assert providers["oidc"] == {"name": "Company SSO", "login_url": "/api/auth/oidc/login"}

    first = await _me(client, await _sign_in(client))
    assert first["email"] == "sso@example.com" and first["role"] == "admin"
    provider.email = "changed@example.com"  # the identity, not the email, decides from now on
    again = await _me(client, await _sign_in(client))
    assert again["id"] == first["id"]


async def test_a_verified_email_links_an_existing_password_account(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    await sign_up(client, "root@example.com")
    existing = await sign_up(client, "sso@example.com")
    me = await _me(client, await _sign_in(client))
    assert me["id"] == existing.user_id and me["role"] == "user"


async def test_an_unverified_email_is_refused(client: httpx.AsyncClient, provider: OidcTestProvider) -> None:
    provider.email_verified = False
    assert_error(await _sign_in(client), 403)


async def test_a_callback_replayed_or_with_another_state_is_refused(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    callback = await _authorize(client)
    tampered = callback.replace("state=", "state=x")
    assert_error(await client.get(tampered), 400, "invalid_request_error")

    callback = await _authorize(client)
    assert (await client.get(callback)).status_code == 200
    # The cookie is gone after use, and the provider would refuse the spent code anyway.
    assert_error(await client.get(callback), 400)


async def test_a_callback_without_the_sign_in_cookie_is_refused(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    callback = await _authorize(client)
    client.cookies.clear()
    assert_error(await client.get(callback), 400)
    assert provider.token_requests == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"nonce": "someone-elses-nonce"},
        {"aud": "another-client"},
        {"aud": [CLIENT_ID, "another-client"]},
        {"iss": "http://evil.example"},
        {"exp": int(time.time()) - 3600},
    ],
)
async def test_id_tokens_that_do_not_fit_this_sign_in_are_refused(
    client: httpx.AsyncClient, provider: OidcTestProvider, claims: dict[str, object]
) -> None:
    provider.claims = claims
    assert_error(await _sign_in(client), 401, "authentication_error")


async def test_an_id_token_signed_with_another_key_is_refused(
    client: httpx.AsyncClient, provider: OidcTestProvider
) -> None:
    provider.sign_with = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    assert_error(await _sign_in(client), 401)


async def test_a_provider_error_is_a_clear_4xx(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/auth/oidc/callback?error=access_denied&state=x"), 401)
    assert_error(await client.get("/api/auth/oidc/callback"), 401)


async def test_closed_registration_admits_only_invited_sso_users(
    tmp_path: Path, database_url: str, provider: OidcTestProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    settings = _settings(tmp_path, database_url, provider, allow_registration=False)
    async with app_client(build_app(settings)) as client:  # type: ignore[arg-type]
        admin = await sign_up(client, "root@example.com")
        assert_error(await _sign_in(client), 403)
        invited = await client.post(
            "/api/admin/invitations", json={"email": "sso@example.com"}, headers=admin.headers
        )
        assert invited.status_code == 201
        me = await _me(client, await _sign_in(client))
        assert me["email"] == "sso@example.com" and me["role"] == "user"
